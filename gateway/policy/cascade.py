"""A tier's confidence cascade as the policy holds it: the threshold, the loaded calibration,
and whether streams cascade; plus the load-time checks that name what to fix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adapters.capabilities import declared
from gateway.policy.schema import CascadeSpec, PolicyFile
from gateway.scoring.confidence import (
    Calibration,
    CalibrationError,
    calibration_from,
    load_calibration,
)


@dataclass(frozen=True, slots=True)
class Cascade:
    """Keep a tier's answer when ``calibration.confidence`` of its token log-probs is at least
    ``min_confidence``; otherwise ask the route's next tier."""

    min_confidence: float
    calibration: Calibration
    streamed: bool  # a streamed request is buffered, decided, then streamed

    def keeps(self, confidence: float) -> bool:
        return confidence >= self.min_confidence


def compile_cascade(spec: CascadeSpec | None, base_dir: Path) -> Cascade | None:
    """The cascade of a tier spec (its calibration read now). Raises ``CalibrationError``."""
    if spec is None:
        return None
    calibration = spec.calibration
    if calibration is None:
        table = load_calibration()
    elif isinstance(calibration, str):
        path = Path(calibration)
        table = load_calibration(path if path.is_absolute() else base_dir / path)
    else:
        table = calibration_from(calibration.model_dump(), "inline calibration")
    return Cascade(spec.min_confidence, table, streamed=spec.streamed == "buffer")


def cascade_problems(spec: PolicyFile, base_dir: Path) -> Iterator[tuple[str, str]]:
    """(path, message) for every tier cascade that cannot work."""
    for i, tier in enumerate(spec.tiers):
        if tier.cascade is None:
            continue
        where = f"tiers[{i}].cascade"
        if i == len(spec.tiers) - 1:
            yield where, "the last tier has no next tier to escalate to; remove `cascade:`"
        for name in tier.backends:
            config = spec.backends.get(name)
            if config is not None and not declared(config).logprobs:
                yield (
                    where,
                    f"backend {name!r} does not return token log-probs, which the cascade "
                    f"reads its confidence from: set `capabilities: {{logprobs: true}}` on it "
                    f"if it does, or move it out of tier {tier.name!r}",
                )
        try:
            compile_cascade(tier.cascade, base_dir)
        except CalibrationError as exc:
            yield f"{where}.calibration", str(exc)
