"""``tiergate calibrate`` and ``tiergate policy replay``: set a policy's score thresholds from
labels, the ledger's scores or its feedback, and see what a new policy would have done to the
ledger's recent traffic."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.policy import settings_or_exit
from gateway.cli.scorer import KeepOpt, PolicyOpt, label_files, policy_at, read_label_files
from gateway.policy import Policy, PolicyError, parse_policy


def calibrate(
    policy: Annotated[Path, typer.Option(help="The policy YAML to calibrate.")],
    target_strong_share: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Share of requests for the strongest tier (0..1)."),
    ] = None,
    target_quality: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="With --labels: share of the weak→strong quality gap to keep (PGR, 0..1). "
            "From the ledger: mean feedback score (0..1) the cheaper tiers' answers must keep.",
        ),
    ] = None,
    labels: Annotated[
        list[Path] | None, typer.Option(help="Labelled prompts (else: the ledger's scores).")
    ] = None,
    since: Annotated[str, typer.Option(help="Ledger window: 7d, 12h or an ISO date.")] = "7d",
    route: Annotated[str | None, typer.Option(help="Ledger rows of this route only.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write here (default: edit --policy).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the change; write nothing.")] = False,
    keep_contaminated: KeepOpt = False,
    tier_shares: Annotated[
        str | None,
        typer.Option(
            help="A share per tier but the last, e.g. tiny=0.5,local=0.3 (the last takes the "
            "rest): sets every threshold."
        ),
    ] = None,
    each_tier: Annotated[
        bool,
        typer.Option(
            help="With --target-quality from the ledger: set every tier's threshold from that "
            "tier's own feedback (else only the one in front of the strongest tier)."
        ),
    ] = False,
) -> None:
    """Set the threshold in front of the strongest tier (or, with --tier-shares or
    --each-tier, every tier's) from labelled data or the ledger."""
    from gateway.tools.scorer.calibrate import (
        edit_max_scores,
        plan_thresholds,
        threshold_for_feedback,
        threshold_for_quality,
        threshold_for_share,
    )

    given = [o for o in (target_strong_share, target_quality, tier_shares) if o is not None]
    if len(given) != 1:
        raise typer.BadParameter(
            "give one of --target-strong-share, --target-quality or --tier-shares"
        )
    loaded = policy_at(policy)
    if each_tier:
        if target_quality is None or labels:
            raise typer.BadParameter(
                "--each-tier goes with --target-quality on the ledger's feedback (no --labels)"
            )
        _calibrate_tiers_by_feedback(policy, loaded, target_quality, since, route, out, dry_run)
        return
    if tier_shares is not None:
        _calibrate_tiers(
            policy, loaded, tier_shares, labels, keep_contaminated, since, route, out, dry_run
        )
        return
    with _exit_if_it_cannot_be_calibrated():
        if labels:
            items = read_label_files(label_files(labels), keep_contaminated).items
            scores = [loaded.score(i.messages, i.max_tokens).value for i in items]
            typer.echo(f"scored {len(scores)} labelled prompts with the policy's scorer", err=True)
            if target_quality is not None:
                weak = [i.weak for i in items]
                strong = [i.strong for i in items]
                threshold, share = threshold_for_quality(scores, weak, strong, target_quality)
            else:
                assert target_strong_share is not None
                threshold, share = (
                    threshold_for_share(scores, target_strong_share),
                    target_strong_share,
                )
        else:
            scores = _ledger_scores(since, route)
            typer.echo(f"read {len(scores)} scored requests from the ledger", err=True)
            if target_quality is not None:
                top = loaded.tiers[-1].name
                cheaper = {t.name for t in loaded.tiers[:-1]}
                rated = _ledger_feedback(since, route, cheaper)
                found = threshold_for_feedback(rated, target_quality)
                typer.echo(
                    f"feedback: {found.rated} rated answers of the tiers below {top!r}; the "
                    f"{found.kept} at or below the new threshold average {found.kept_mean:.3f} "
                    f"(target {target_quality:g})",
                    err=True,
                )
                threshold = found.threshold
                share = sum(1 for s in scores if s > threshold) / len(scores) if scores else 0.0
            else:
                assert target_strong_share is not None
                threshold = threshold_for_share(scores, target_strong_share)
                share = target_strong_share
        tiers = [(t.name, t.max_score) for t in loaded.tiers]
        changes = plan_thresholds(tiers, threshold)
        text = policy.read_text()
        new_text = edit_max_scores(text, {c.index: c.new for c in changes})
    above = sum(1 for s in scores if s > threshold) / len(scores)
    for c in changes:
        typer.echo(f"tiers[{c.index}] {c.name}: max_score {c.old} → {c.new}")
    typer.echo(
        f"strong share on this data: {above:.1%} (target {share:.1%}) above max_score {threshold:g}"
    )
    _write_calibrated(policy, new_text, out, dry_run)


@contextlib.contextmanager
def _exit_if_it_cannot_be_calibrated() -> Iterator[None]:
    """A threshold that cannot be set (``CalibrationError``, a value out of range) ends the
    command with its reason on stderr and exit code 2."""
    from gateway.tools.scorer.calibrate import CalibrationError

    try:
        yield
    except (CalibrationError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None


def _write_calibrated(policy: Path, new_text: str, out: Path | None, dry_run: bool) -> None:
    """Validate the edited policy, then write it to ``out`` (default: in place) unless dry."""
    try:
        parse_policy(new_text.encode(), source=str(out or policy), base_dir=policy.resolve().parent)
    except PolicyError as exc:  # pragma: no cover - the edit keeps thresholds increasing
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    if dry_run:
        return
    target = out or policy
    target.write_text(new_text)
    typer.echo(f"wrote {target} (only the max_score values changed)")


def _calibrate_tiers(
    policy: Path,
    loaded: Policy,
    tier_shares: str,
    labels: list[Path] | None,
    keep_contaminated: bool,
    since: str,
    route: str | None,
    out: Path | None,
    dry_run: bool,
) -> None:
    """Every threshold at once, so that each tier gets its share of the scores."""
    from gateway.tools.scorer.calibrate import (
        edit_max_scores,
        parse_tier_shares,
        thresholds_for_shares,
    )

    names = [t.name for t in loaded.tiers]
    with _exit_if_it_cannot_be_calibrated():
        shares = parse_tier_shares(tier_shares, names)
        if labels:
            items = read_label_files(label_files(labels), keep_contaminated).items
            scores = [loaded.score(i.messages, i.max_tokens).value for i in items]
        else:
            scores = _ledger_scores(since, route)
        typer.echo(f"calibrating on {len(scores)} scores", err=True)
        thresholds = thresholds_for_shares(scores, shares)
        new_text = edit_max_scores(policy.read_text(), dict(enumerate(thresholds)))
    floor = 0.0
    for index, (name, threshold) in enumerate(zip(names, thresholds, strict=False)):
        got = sum(1 for s in scores if floor < s <= threshold or (index == 0 and s <= threshold))
        old = loaded.tiers[index].max_score
        typer.echo(
            f"tiers[{index}] {name}: max_score {old:g} → {threshold:g}  "
            f"({got / len(scores):.1%} of the requests; target {shares[index]:.1%})"
        )
        floor = threshold
    rest = sum(1 for s in scores if s > thresholds[-1]) / len(scores)
    typer.echo(f"tiers[{len(names) - 1}] {names[-1]}: the rest ({rest:.1%})")
    _write_calibrated(policy, new_text, out, dry_run)


def _calibrate_tiers_by_feedback(
    policy: Path,
    loaded: Policy,
    quality: float,
    since: str,
    route: str | None,
    out: Path | None,
    dry_run: bool,
) -> None:
    """Every threshold but the last, each from the feedback on its own tier's answers."""
    from gateway.tools.scorer.calibrate import edit_max_scores, thresholds_for_feedback

    cheaper = loaded.tiers[:-1]
    if not cheaper:
        typer.echo("error: the policy has one tier: there is no threshold to calibrate", err=True)
        raise typer.Exit(code=2)
    with _exit_if_it_cannot_be_calibrated():
        per_tier = [(t.name, _ledger_feedback(since, route, {t.name})) for t in cheaper]
        fits = thresholds_for_feedback(per_tier, quality)
        new_text = edit_max_scores(
            policy.read_text(), {i: fit.threshold for i, fit in enumerate(fits)}
        )
    for index, (tier, fit) in enumerate(zip(cheaper, fits, strict=True)):
        typer.echo(
            f"tiers[{index}] {tier.name}: max_score {tier.max_score:g} → {fit.threshold:g}  "
            f"({fit.rated} rated answers; the {fit.kept} kept average {fit.kept_mean:.3f}, "
            f"target {quality:g})"
        )
    _write_calibrated(policy, new_text, out, dry_run)


def _ledger_feedback(since: str, route: str | None, tiers: set[str]) -> list[tuple[float, float]]:
    """(complexity score, mean feedback) of the window's rated requests answered by ``tiers``."""
    from gateway.ledger.db import make_engine
    from gateway.ledger.report import parse_since
    from gateway.ledger.scores import rated_scores

    start = parse_since(since)
    engine = make_engine(settings_or_exit().ledger_url())
    try:
        return rated_scores(engine, start, route, tiers)
    finally:
        engine.dispose()


def _ledger_scores(since: str, route: str | None) -> list[float]:
    from gateway.ledger.db import make_engine
    from gateway.ledger.report import parse_since
    from gateway.ledger.scores import recent_scores

    start = parse_since(since)
    engine = make_engine(settings_or_exit().ledger_url())
    try:
        return recent_scores(engine, start, route)
    finally:
        engine.dispose()


def replay_cmd(
    new: Annotated[Path, typer.Argument(help="The candidate policy YAML.")],
    since: Annotated[str, typer.Option(help="Ledger window: 7d, 12h or an ISO date.")] = "7d",
    current: PolicyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-decide the ledger's recent requests under NEW: tier mix, cost, expected quality."""
    from gateway.ledger.db import make_engine
    from gateway.ledger.report import parse_since
    from gateway.tools.scorer.replay import render, replay, to_json

    try:
        start = parse_since(since)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    candidate = policy_at(new)
    active = policy_at(current)
    engine = make_engine(settings_or_exit().ledger_url())
    try:
        result = replay(engine, start, active, candidate)
    finally:
        engine.dispose()
    typer.echo(json.dumps(to_json(result), indent=2) if as_json else render(result))
