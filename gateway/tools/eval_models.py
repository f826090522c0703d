"""Side-by-side evaluation of backends on a case file: quality, latency and speed.

A case file is JSON lines, one case each::

    {"id": "capital", "prompt": "What is the capital of France?", "keywords": ["Paris"]}
    {"id": "sum", "messages": [{"role": "user", "content": "2+2? Digits only."}], "exact": "4"}

A case passes when every keyword appears in the answer (case-insensitive) or the answer equals
``exact`` (case, surrounding space and a final full stop ignored); its quality is the share of
keywords found (1 or 0 for ``exact``). Every backend gets the same cases, greedy (temperature
0), one at a time, so latencies are comparable.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters.base import Backend, ChatRequest, Message
from adapters.errors import BackendError


class _CaseMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class Case(BaseModel):
    """One case of the file (pydantic: this is an edge)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    prompt: str | None = None
    messages: tuple[_CaseMessage, ...] | None = None
    keywords: tuple[str, ...] = ()
    exact: str | None = None
    max_tokens: int = Field(default=64, ge=1, le=4096)

    @model_validator(mode="after")
    def _complete(self) -> Case:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        if not self.keywords and self.exact is None:
            raise ValueError("give keywords (a list) or exact (a string) to check the answer by")
        return self

    def request(self) -> ChatRequest:
        turns = (
            (Message(role="user", content=self.prompt),)
            if self.prompt is not None
            else tuple(Message(role=m.role, content=m.content) for m in self.messages or ())
        )
        return ChatRequest(messages=turns, max_tokens=self.max_tokens, temperature=0.0)

    def grade(self, answer: str) -> float:
        if self.exact is not None:
            return float(_normal(answer) == _normal(self.exact))
        low = answer.casefold()
        return sum(k.casefold() in low for k in self.keywords) / len(self.keywords)


def _normal(text: str) -> str:
    return text.strip().removesuffix(".").strip().casefold()


class CaseFileError(ValueError):
    pass


def read_cases(path: Path) -> list[Case]:
    """Parse a case file; errors name the line and the field."""
    if not path.is_file():
        raise CaseFileError(f"{path}: no such file; give a JSON-lines case file")
    cases: list[Case] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            cases.append(Case.model_validate_json(line))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "case"
            raise CaseFileError(f"{path}:{number}: {where}: {problem['msg']}") from None
    if not cases:
        raise CaseFileError(f"{path}: no cases")
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise CaseFileError(f"{path}: case ids must be unique")
    return cases


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: str
    quality: float
    answer: str
    latency_ms: float
    ttft_ms: float | None
    completion_tokens: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BackendSummary:
    backend: str
    results: tuple[CaseResult, ...] = field(repr=False)

    @property
    def answered(self) -> list[CaseResult]:
        return [r for r in self.results if r.error is None]

    def row(self) -> dict[str, Any]:
        done = self.answered
        lat = [r.latency_ms for r in done]
        ttft = [r.ttft_ms for r in done if r.ttft_ms is not None]
        seconds = sum(r.latency_ms for r in done) / 1000
        tokens = sum(r.completion_tokens for r in done)
        return {
            "backend": self.backend,
            "cases": len(self.results),
            "passed": sum(r.quality == 1.0 for r in self.results),
            "quality": round(statistics.fmean(r.quality for r in self.results), 4),
            "errors": len(self.results) - len(done),
            "latency_p50_ms": _pct(lat, 50),
            "latency_p95_ms": _pct(lat, 95),
            "ttft_p50_ms": _pct(ttft, 50),
            "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        }


def _pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: a value that was measured)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 1)


async def run_backend(backend: Backend, cases: Iterable[Case]) -> BackendSummary:
    results: list[CaseResult] = []
    for case in cases:
        try:
            done = await backend.acomplete(case.request())
        except BackendError as exc:
            results.append(CaseResult(case.id, 0.0, "", 0.0, None, 0, error=str(exc)))
            continue
        results.append(
            CaseResult(
                case=case.id,
                quality=case.grade(done.text),
                answer=done.text,
                latency_ms=done.timings.latency_ms,
                ttft_ms=done.timings.ttft_ms,
                completion_tokens=done.usage.completion_tokens,
            )
        )
    return BackendSummary(backend.info.name, tuple(results))


def render_table(summaries: Sequence[BackendSummary]) -> str:
    columns = [
        ("quality", "quality"),
        ("passed", "passed"),
        ("errors", "errors"),
        ("latency_p50_ms", "p50 ms"),
        ("latency_p95_ms", "p95 ms"),
        ("ttft_p50_ms", "TTFT p50"),
        ("tokens_per_s", "tok/s"),
    ]
    rows = [s.row() for s in summaries]
    width = max(12, *(len(r["backend"]) for r in rows))
    out = ["metric".ljust(14) + "".join(r["backend"].rjust(width + 2) for r in rows)]
    for key, label in columns:
        cells = []
        for r in rows:
            value = r[key]
            text = (
                "-"
                if value is None
                else (f"{value}/{r['cases']}" if key == "passed" else str(value))
            )
            cells.append(text.rjust(width + 2))
        out.append(label.ljust(14) + "".join(cells))
    return "\n".join(out)


def render_json(summaries: Sequence[BackendSummary]) -> str:
    return json.dumps(
        {
            "backends": [s.row() for s in summaries],
            "cases": {
                s.backend: [
                    {
                        "id": r.case,
                        "quality": r.quality,
                        "answer": r.answer,
                        "latency_ms": round(r.latency_ms, 1),
                        "error": r.error,
                    }
                    for r in s.results
                ]
                for s in summaries
            },
        },
        indent=2,
        ensure_ascii=False,
    )
