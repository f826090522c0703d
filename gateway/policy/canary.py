"""The policy's ``canary:`` block (the YAML edge, so pydantic; unknown fields are errors).

A canary puts a *candidate* backend next to the stable backend of one tier: first as a
``shadow`` (a sample of requests is also sent to it after the client has its answer, and the two
answers are compared), then as a ``split`` (a sticky share of the traffic is served by it).
Guardrails, evaluated from the ledger, roll it back at once when they are breached and promote it
(or mark it ready for a manual promote) once they pass after enough samples and time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["shadow", "split"]
StickyBy = Literal["api_key", "user", "header"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PinSpec(_Strict):
    """What the candidate must be, byte for byte: refused at load (tiny) or start (ollama)."""

    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="a tiny candidate's GGUF file hash (sha256sum FILE)",
    )
    digest: str | None = Field(
        default=None,
        pattern=r"^(sha256:)?[0-9a-f]{12,64}$",
        description="an ollama candidate's model digest (`ollama list` ID, or the full digest)",
    )


class StickySpec(_Strict):
    """Which part of a request keeps one caller on one arm (split mode)."""

    by: StickyBy = "api_key"
    header: str | None = Field(
        default=None, min_length=1, description="the header's name, with by: header"
    )

    @model_validator(mode="after")
    def _header_named(self) -> StickySpec:
        if (self.by == "header") != (self.header is not None):
            raise ValueError("give header: NAME exactly when by: header")
        return self


class JudgeSpec(_Strict):
    """A backend asked to grade the candidate's answer against the stable one (shadow mode)."""

    backend: str = Field(description="a backend of this policy (usually a strong remote one)")
    sample: float = Field(
        default=0.1, gt=0, le=1, description="share of shadow comparisons sent to the judge"
    )
    per_minute: int = Field(default=10, ge=1, description="at most this many judge calls a minute")


class ShadowSpec(_Strict):
    """Bounds on the background work shadow mode adds."""

    concurrency: int = Field(default=2, ge=1, le=64, description="shadow calls at once")
    queue: int = Field(
        default=32, ge=0, description="shadow calls waiting; beyond this they are dropped"
    )
    timeout_s: float = Field(default=60.0, gt=0)
    judge: JudgeSpec | None = None


class GuardrailSpec(_Strict):
    """The numbers a candidate must keep (measured on its arm against the stable arm)."""

    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_latency_p95_ratio: float = Field(
        default=1.5, gt=0, description="candidate p95 latency / stable p95 latency"
    )
    min_quality: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="mean quality score 0-1 (shadow comparisons; in split mode: /v1/feedback)",
    )
    min_samples: int = Field(default=200, ge=1, description="candidate requests before any verdict")
    min_duration_s: float = Field(
        default=3600.0, ge=0, description="time since the start before a promotion"
    )


class CanarySpec(_Strict):
    """One candidate against the stable backend of one tier."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", max_length=64)
    candidate: str = Field(description="a backend of this policy that is in no tier")
    tier: str = Field(description="the tier it competes in; its first backend is the stable one")
    route: str | None = Field(default=None, description="only requests on this route take part")
    pin: PinSpec = PinSpec()
    mode: Mode = "shadow"
    percent: float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="split: share of sticky keys served by the candidate; shadow: share of "
        "the tier's requests also sent to it",
    )
    sticky: StickySpec = StickySpec()
    shadow: ShadowSpec = ShadowSpec()
    guardrails: GuardrailSpec = GuardrailSpec()
    on_pass: Literal["promote", "wait"] = Field(
        default="wait", description="promote automatically, or wait for a manual promote"
    )
    evaluate_every_s: float = Field(default=30.0, gt=0)
