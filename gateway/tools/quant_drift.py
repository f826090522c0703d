"""What int8 dynamic quantization changes in an artifact's predictions.

The original (float32) and its int8 copy read the same token sequences: each prompt, chat
templated, followed by the original's own greedy answer (teacher forcing, so both models are
scored on the same contexts). At every position where the model predicts an answer token,
the two next-token distributions are compared:

* agreement: the share of positions where both pick the same most likely token (greedy argmax);
* KL divergence KL(original || int8) in nats, its mean and maximum over positions;
* the original's mean top-1 probability: how decided it was (a random-weight model's next-token
  distributions are nearly flat, so a tiny change can flip its argmax).

The weights' size in memory is measured as the bytes of each model's serialized state dict (for
the int8 copy: packed int8 weights, their scales, and the float parts left unquantized).

Runs in a child process of its own (``tiergate bench``), so torch's memory never counts
toward the speed runs. Needs the ``torch`` extra.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Drift:
    """How far the int8 copy's next-token distributions are from the original's."""

    prompts: int
    positions: int
    agreement: float
    mean_kl: float
    max_kl: float
    original_top1_mean: float
    original_weights_mb: float
    int8_weights_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(reference: Sequence[Any], candidate: Sequence[Any]) -> tuple[int, float, float, float]:
    """Positions, argmax agreement, mean and max KL(reference || candidate) over matching
    log-probability matrices (one ``[positions, vocabulary]`` tensor per prompt)."""
    import torch

    ref = torch.cat(list(reference)).double()
    cand = torch.cat(list(candidate)).double()
    if ref.shape != cand.shape:
        raise ValueError(f"shapes differ: {tuple(ref.shape)} vs {tuple(cand.shape)}")
    agree = (ref.argmax(dim=-1) == cand.argmax(dim=-1)).double().mean().item()
    kl = (ref.exp() * (ref - cand)).sum(dim=-1).clamp_min(0.0)
    return int(ref.shape[0]), float(agree), float(kl.mean().item()), float(kl.max().item())


def _state_mb(model: Any) -> float:
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / (1024 * 1024)


def _log_probs(model: Any, ids: list[int], start: int) -> Any:
    """Next-token log-probabilities at positions ``start`` .. end of ``ids``."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return torch.log_softmax(logits[start:].double(), dim=-1)


def measure(path: Path, prompts: Sequence[str], max_tokens: int) -> Drift:
    """Load the artifact at ``path`` on the CPU, quantize a copy, and compare them."""
    import torch

    from adapters.artifact.loop import Sampling, generate
    from adapters.artifact.runtime import load, quantize_int8
    from adapters.config import ArtifactConfig

    loaded = load(ArtifactConfig(type="artifact", path=str(path), device="cpu", dtype="float32"))
    original = loaded.model
    int8 = quantize_int8(original, inplace=False)
    tokenizer = loaded.tokenizer
    reference: list[Any] = []
    candidate: list[Any] = []
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer = generate(loaded, prompt_ids, Sampling(max_tokens=max_tokens, temperature=0.0))
        ids = prompt_ids + list(answer.completion_ids)
        # The prediction of answer token k is made at position len(prompt) - 1 + k.
        start = len(prompt_ids) - 1
        reference.append(_log_probs(original, ids, start))
        candidate.append(_log_probs(int8, ids, start))
    positions, agreement, mean_kl, max_kl = compare(reference, candidate)
    top1 = float(torch.cat(reference).exp().max(dim=-1).values.mean().item())
    return Drift(
        prompts=len(prompts),
        positions=positions,
        agreement=agreement,
        mean_kl=mean_kl,
        max_kl=max_kl,
        original_top1_mean=top1,
        original_weights_mb=_state_mb(original),
        int8_weights_mb=_state_mb(int8),
    )
