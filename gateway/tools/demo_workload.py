"""The demo's workload: a fixed set of prompts of every kind (chit-chat, summaries, code,
maths, multi-step reasoning), and the requests drawn from them by a seeded random generator, so
the same seed against the same gateway sends the same requests."""

from __future__ import annotations

import random
from dataclasses import dataclass

LARGE_MAX_TOKENS = 1024


@dataclass(frozen=True, slots=True)
class Prompt:
    kind: str
    text: str
    max_tokens: int
    system: str | None = None
    short_answer: bool = False  # safe with a large max_tokens: the answer ends early by itself


KINDS = ("chit-chat", "summary", "code", "maths", "reasoning")

_ARTICLE = (
    "The city council met on Tuesday to discuss the proposed bike lanes on Main Street. "
    "Shop owners worried that removing forty parking spaces would drive customers away, while "
    "cyclists and parents of schoolchildren argued that the street is dangerous at rush hour. "
    "The council postponed the vote by a month and asked the transport office for a survey of "
    "how customers actually reach the shops."
)
_EMAIL = (
    "Hi team, the release planned for Friday slips to next Wednesday: the payment provider "
    "changed its API on Monday and two of our integration tests fail against the sandbox. "
    "Priya is fixing the client, Tom is updating the tests, and support has been told. "
    "No customer data is affected. Thanks, Lena"
)

PROMPTS: tuple[Prompt, ...] = (
    # chit-chat
    Prompt("chit-chat", "Hi! How are you today?", 24, short_answer=True),
    Prompt("chit-chat", "Tell me a fun fact about otters.", 24, short_answer=True),
    Prompt("chit-chat", "What is a good name for a goldfish?", 24, short_answer=True),
    Prompt("chit-chat", "Say good morning in French and in Spanish.", 24, short_answer=True),
    Prompt(
        "chit-chat",
        "Thanks for the help earlier, have a nice evening!",
        24,
        system="You are a friendly assistant. Keep replies short.",
        short_answer=True,
    ),
    # summaries
    Prompt("summary", f"Summarise this in one sentence:\n\n{_ARTICLE}", 40, short_answer=True),
    Prompt("summary", f"Give this email a subject line:\n\n{_EMAIL}", 16, short_answer=True),
    Prompt(
        "summary",
        f"Summarise the following email for a manager in two short bullet points:\n\n{_EMAIL}",
        40,
    ),
    Prompt(
        "summary",
        "Summarise the plot of Romeo and Juliet in two sentences.",
        40,
        short_answer=True,
    ),
    # code
    Prompt("code", "Write a Python function that checks whether a string is a palindrome.", 48),
    Prompt(
        "code",
        "Explain what this SQL query returns:\n\nSELECT customer_id, count(*) FROM orders "
        "WHERE created_at > now() - interval '7 days' GROUP BY customer_id HAVING count(*) > 3;",
        48,
    ),
    Prompt(
        "code",
        "Fix the bug in this JavaScript function and explain it:\n\n```js\nfunction sum(xs) {\n"
        "  let total;\n  for (const x of xs) { total += x; }\n  return total;\n}\n```",
        48,
    ),
    Prompt(
        "code",
        "Refactor this Python code to use a dict comprehension and add type hints:\n\n```python\n"
        "def index(users):\n    out = {}\n    for u in users:\n        out[u.id] = u.name\n"
        "    return out\n```",
        48,
    ),
    # maths
    Prompt("maths", "What is 17 * 23?", 24, short_answer=True),
    Prompt("maths", "Solve for x: 3x + 7 = 22. Show the steps.", 48),
    Prompt(
        "maths",
        "A shirt costs $40 after a 20% discount. What was the original price? Explain how you "
        "calculate it.",
        40,
    ),
    Prompt(
        "maths",
        "Prove that the sum of two even integers is even, then compute the derivative of "
        "x^3 * sin(x) and the integral of 2x from 0 to 3. Explain each step.",
        48,
    ),
    # multi-step reasoning
    Prompt(
        "reasoning",
        "First list three pros and three cons of remote work, then compare them in depth, and "
        "finally recommend a policy for a 50-person startup that must work across three time "
        "zones. Explain your reasoning step by step.",
        48,
    ),
    Prompt(
        "reasoning",
        "We must choose between PostgreSQL and MongoDB for an order-tracking service with strict "
        "consistency requirements. First analyze the trade-offs, then evaluate each option "
        "against the requirements, explain why each could fail, and finally justify a "
        "recommendation in at most five steps.",
        48,
    ),
    Prompt(
        "reasoning",
        "Plan a three-day trip to Lisbon for two people on a budget of 600 euros: first the "
        "transport, then lodging, then a day-by-day plan. Why is each choice the cheapest "
        "sensible one?",
        48,
    ),
)


@dataclass(frozen=True, slots=True)
class DemoRequest:
    index: int
    prompt: Prompt
    model: str
    stream: bool
    max_tokens: int
    seed: int

    def messages(self) -> list[dict[str, str]]:
        out = []
        if self.prompt.system:
            out.append({"role": "system", "content": self.prompt.system})
        out.append({"role": "user", "content": self.prompt.text})
        return out


@dataclass(frozen=True, slots=True)
class Target:
    """What the gateway offers, from ``GET /v1/models``."""

    default_route: str
    routes: tuple[str, ...]  # besides the default
    backends: tuple[str, ...]  # usable now


def plan_requests(n: int, seed: int, target: Target) -> list[DemoRequest]:
    """``n`` requests: every prompt in turn (a seeded order, reshuffled each round), each with a
    seeded choice of route or pinned backend, streaming and ``max_tokens``."""
    rng = random.Random(seed)
    order: list[Prompt] = []
    requests: list[DemoRequest] = []
    pinned = 0
    for index in range(n):
        if not order:
            order = list(PROMPTS)
            rng.shuffle(order)
        prompt = order.pop()
        draw = rng.random()
        if draw < 0.2 and target.backends:
            model = target.backends[pinned % len(target.backends)]  # each backend in turn
            pinned += 1
        elif draw < 0.35 and target.routes:
            model = rng.choice(target.routes)
        else:
            model = target.default_route
        large = prompt.short_answer and rng.random() < 0.25
        requests.append(
            DemoRequest(
                index=index,
                prompt=prompt,
                model=model,
                stream=rng.random() < 0.35,
                max_tokens=LARGE_MAX_TOKENS if large else prompt.max_tokens,
                seed=rng.randrange(2**31),
            )
        )
    return requests
