"""``tiergate calibrate``: set the score threshold in front of a policy's strongest tier so that
a target share of requests goes to it, or so that a target share of the weak→strong quality gap
is kept (PGR, which needs labelled data), or — from the ledger — so that the answers of the
cheaper tiers keep a target mean feedback score.

The threshold is the ``max_score`` of the tier just below the last one. Cheaper tiers below it
keep their thresholds unless those would no longer be below the new one; then they are scaled
down in proportion (and the change is reported). The file is edited in place of those numbers
only: comments, order and everything else stay as they were (PyYAML's node positions tell where
each number is; no round-trip YAML library is needed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from gateway.tools.scorer.quality import cpt, curve

DECIMALS = 6


class CalibrationError(ValueError):
    """Calibration cannot be done as asked; the message says why and what to do instead."""


def threshold_for_share(scores: Sequence[float], share: float) -> float:
    """A ``max_score`` that sends (as nearly as the scores allow) ``share`` of them above it:
    halfway between the last score sent up and the first kept down."""
    if not 0.0 <= share <= 1.0:
        raise CalibrationError(f"a share is between 0 and 1, got {share}")
    if not scores:
        raise CalibrationError("no scores to calibrate on")
    ranked = sorted(scores, reverse=True)
    up = round(share * len(ranked))
    if up <= 0:
        return 1.0
    if up >= len(ranked):
        return 0.0
    high, low = ranked[up - 1], ranked[up]
    if high == low:  # a tie straddles the cut: the whole group stays down
        return _fit(low, low, 1.0)
    return _fit((high + low) / 2, low, high)


def threshold_for_quality(
    scores: Sequence[float], weak: Sequence[float], strong: Sequence[float], pgr: float
) -> tuple[float, float]:
    """The threshold (and the strong share it gives) keeping ``pgr`` of the quality gap."""
    if not 0.0 <= pgr <= 1.0:
        raise CalibrationError(f"--target-quality is a share of the quality gap (0..1), got {pgr}")
    share = cpt(curve(scores, weak, strong), pgr)
    share = min(1.0, math.ceil(share * len(scores) - 1e-9) / len(scores))
    return threshold_for_share(scores, share), share


def parse_tier_shares(text: str, tiers: Sequence[str]) -> list[float]:
    """``"tiny=0.5,local=0.3"`` → a share per tier but the last (which takes the rest)."""
    wanted: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        if not sep:
            raise CalibrationError(f"--tier-shares: {part!r} is not NAME=SHARE (e.g. tiny=0.5)")
        try:
            wanted[name.strip()] = float(value)
        except ValueError:
            raise CalibrationError(f"--tier-shares: {value!r} is not a number") from None
    cheaper = list(tiers[:-1])
    unknown = [n for n in wanted if n not in cheaper]
    if unknown or sorted(wanted) != sorted(cheaper):
        raise CalibrationError(
            f"--tier-shares: give a share for each tier but the last ({', '.join(cheaper)}; "
            f"{tiers[-1]} takes the rest)" + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    shares = [wanted[n] for n in cheaper]
    if any(not 0.0 < v < 1.0 for v in shares) or sum(shares) >= 1.0:
        raise CalibrationError(
            f"--tier-shares: each share is between 0 and 1 and together they stay below 1 "
            f"(the last tier takes the rest); got {sum(shares):g} in all"
        )
    return shares


def thresholds_for_shares(scores: Sequence[float], shares: Sequence[float]) -> list[float]:
    """A ``max_score`` per tier but the last so that, cheapest first, each tier gets its share
    of ``scores``: tier i's threshold leaves ``1 − (share 0 + … + share i)`` above it."""
    thresholds: list[float] = []
    cumulative = 0.0
    for share in shares:
        cumulative += share
        thresholds.append(threshold_for_share(scores, max(0.0, 1.0 - cumulative)))
    for lower, higher in itertools.pairwise(thresholds):
        if higher <= lower:
            raise CalibrationError(
                "--tier-shares: two tiers would get the same threshold (many requests share one "
                "score); give the cheaper tier a larger or smaller share"
            )
    return thresholds


MIN_FEEDBACK = 20  # rated requests below the strongest tier needed to set a threshold by them


@dataclass(frozen=True, slots=True)
class FeedbackFit:
    threshold: float
    kept_mean: float  # mean feedback of the rated cheap-tier answers at or below the threshold
    kept: int  # how many rated answers that mean is over
    rated: int  # rated answers of the cheaper tiers in all


def threshold_for_feedback(rated: Sequence[tuple[float, float]], quality: float) -> FeedbackFit:
    """From ``(complexity score, feedback 0..1)`` of requests the cheaper tiers answered: the
    highest threshold whose kept answers (score at or below it) still average ``quality``.

    Ranked by score, the running mean of the feedback is taken from the easiest request up; the
    cut goes after the last request where it still reaches the target. Only scores the cheaper
    tiers actually served carry their feedback, so the threshold never rises above the highest
    of them (what the cheaper tiers would do with harder requests is not in the ledger)."""
    if not 0.0 <= quality <= 1.0:
        raise CalibrationError(f"--target-quality is a mean feedback score (0..1), got {quality}")
    if len(rated) < MIN_FEEDBACK:
        raise CalibrationError(
            f"only {len(rated)} requests answered below the strongest tier have feedback in "
            f"this window; at least {MIN_FEEDBACK} are needed (POST /v1/feedback, or widen "
            "--since, or use --target-strong-share)"
        )
    ranked = sorted(rated)
    total, best = 0.0, -1
    for index, (_, score) in enumerate(ranked):
        total += score
        if total / (index + 1) >= quality - 1e-12:
            best = index
    if best < 0:
        mean = ranked[0][1]
        return FeedbackFit(threshold=0.0, kept_mean=mean, kept=0, rated=len(ranked))
    kept_mean = sum(f for _, f in ranked[: best + 1]) / (best + 1)
    low = ranked[best][0]
    if best + 1 < len(ranked) and ranked[best + 1][0] > low:
        threshold = _fit((low + ranked[best + 1][0]) / 2, low, ranked[best + 1][0])
    else:
        threshold = _fit(low, low, 1.0 + 1e-9)
    return FeedbackFit(threshold=threshold, kept_mean=kept_mean, kept=best + 1, rated=len(ranked))


def thresholds_for_feedback(
    per_tier: Sequence[tuple[str, Sequence[tuple[float, float]]]], quality: float
) -> list[FeedbackFit]:
    """Every threshold but the last from feedback: each cheaper tier, cheapest first, keeps the
    requests its own rated answers say it serves at ``quality`` (``threshold_for_feedback`` on
    that tier's answers). Thresholds must rise from tier to tier; a tier whose answers fall
    short right above the tier below it cannot keep any requests, and that is an error that
    says so rather than a policy with a tier that never serves."""
    fits: list[FeedbackFit] = []
    floor = -1.0
    for name, rated in per_tier:
        try:
            fit = threshold_for_feedback(rated, quality)
        except CalibrationError as exc:
            raise CalibrationError(f"tier {name!r}: {exc}") from None
        if fit.threshold <= floor:
            raise CalibrationError(
                f"tier {name!r}: its rated answers average below {quality:g} already at its "
                f"easiest requests, so its max_score would not rise above the tier below it "
                f"({floor:g}): lower --target-quality, improve or drop the tier, or calibrate "
                f"only the last threshold (without --each-tier)"
            )
        fits.append(fit)
        floor = fit.threshold
    return fits


def _fit(value: float, low: float, high: float) -> float:
    """``value`` rounded for the file, still >= low (stays down) and < high (goes up)."""
    rounded = round(value, DECIMALS)
    if rounded < low:
        rounded = math.ceil(low * 10**DECIMALS) / 10**DECIMALS
    if rounded >= high:
        rounded = low
    return min(1.0, max(0.0, rounded))


@dataclass(frozen=True, slots=True)
class TierChange:
    index: int
    name: str
    old: float | None
    new: float


def plan_thresholds(
    tiers: Sequence[tuple[str, float | None]], threshold: float
) -> list[TierChange]:
    """New ``max_score`` values: the tier below the last gets ``threshold``; lower ones that
    would not stay below it are scaled down in proportion."""
    if len(tiers) < 2:
        raise CalibrationError("the policy has one tier: there is no threshold to calibrate")
    top = len(tiers) - 2
    name, old_top = tiers[top]
    changes = [TierChange(top, name, old_top, threshold)]
    ratio = threshold / old_top if old_top else 0.0
    for index in range(top):
        lower_name, old = tiers[index]
        if old is not None and old >= threshold:
            new = round(old * ratio, DECIMALS) if ratio else 0.0
            changes.append(TierChange(index, lower_name, old, new))
    return sorted(changes, key=lambda c: c.index)


def edit_max_scores(text: str, values: Mapping[int, float]) -> str:
    """``text`` with ``tiers[i].max_score`` set to ``values[i]``, nothing else touched."""
    root = yaml.compose(text)
    tiers = _child(root, "tiers")
    if not isinstance(tiers, yaml.SequenceNode):
        raise CalibrationError("tiers: not a list in the file")
    edits: list[tuple[int, int, str]] = []
    for index, value in values.items():
        if index >= len(tiers.value):
            raise CalibrationError(f"tiers[{index}]: no such tier in the file")
        node = _child(tiers.value[index], "max_score")
        if not isinstance(node, yaml.ScalarNode):
            raise CalibrationError(
                f"tiers[{index}].max_score: missing in the file; add `max_score: 0.5` to that "
                f"tier and run calibrate again"
            )
        edits.append((node.start_mark.index, node.end_mark.index, _number(value)))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def _number(value: float) -> str:
    return f"{value:.{DECIMALS}f}".rstrip("0").rstrip(".") if value else "0.0"


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v  # type: ignore[no-any-return]
    return None
