"""Synthetic prompts on two topics that the v1 scorer cannot tell apart (the same sentence
shapes, no code, maths or reasoning cues), for planting a routing rule the adaptive scorer must
learn from labels alone."""

from __future__ import annotations

import random

from adapters.base import Message

_SHAPES = (
    "Could you tell me about {a} and {b}?",
    "I keep wondering about {a} when {b} is involved.",
    "Tell me something useful about {a}, especially {b}.",
    "What should a beginner know about {a} and {b}?",
    "Give me a few tips on {a} with {b}.",
)
NETWORKING = (
    "kubernetes pod networking",
    "service mesh sidecars",
    "ingress controllers",
    "container network interfaces",
    "cluster DNS resolution",
    "network policies",
    "load balancer health checks",
    "overlay networks",
    "egress gateways",
    "node ports",
)
BAKING = (
    "sourdough starters",
    "bread proofing baskets",
    "rye flour hydration",
    "baking stones",
    "crumb structure",
    "levain feeding",
    "scoring the loaf",
    "dutch oven baking",
    "banneton flour",
    "autolyse resting",
)


def prompts(topic: tuple[str, ...], n: int, seed: int) -> list[tuple[Message, ...]]:
    """``n`` different one-message prompts about ``topic``."""
    rng = random.Random(seed)
    out: list[tuple[Message, ...]] = []
    for _ in range(n):
        a, b = rng.sample(topic, 2)
        out.append((Message(role="user", content=rng.choice(_SHAPES).format(a=a, b=b)),))
    return out
