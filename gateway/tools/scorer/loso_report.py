"""The leave-one-source-out report (``eval-router --loso``) as JSON and as markdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.tools.scorer.loso import Fold, GroupFigures


def to_json(
    groups: Sequence[GroupFigures],
    folds: Sequence[Fold],
    summary: dict[str, Any],
    meta: dict[str, Any],
) -> dict[str, Any]:
    return {
        **meta,
        "folds": [
            {"held_out": f.held_out, "trained_on": list(f.trained_on), "rows": f.training_rows}
            for f in folds
        ],
        "groups": [
            {
                "group": g.group,
                "source": g.source,
                "prompts": g.prompts,
                "weak_quality": round(g.weak_quality, 4),
                "strong_quality": round(g.strong_quality, 4),
                "routers": [
                    {
                        "name": r.name,
                        "apgr": round(r.apgr, 4),
                        "ci95": [round(r.low, 4), round(r.high, 4)],
                    }
                    for r in g.routers
                ],
            }
            for g in groups
        ],
        "summary": summary,
    }


def to_markdown(report: dict[str, Any]) -> str:
    """One row per group, one column per router: APGR [95 % interval]; then the means."""
    names = [r["name"] for r in report["groups"][0]["routers"]]
    lines = ["# Router evaluation: leave one source out", ""]
    lines.append(
        f"Each source is scored by a v2 model trained on the other sources only "
        f"({report['prompts']:,} prompts; {report.get('excluded_from_training', 0)} never "
        f"trained on, {report.get('contaminated_left_out', 0)} marked contaminated left out). "
        f"APGR with a bootstrap 95% interval ({report['resamples']:,} resamples, seed "
        f"{report['seed']}); random is the expected curve of a random router (0.5), prompt "
        f"length routes the longest prompts first, oracle routes by the known outcome."
    )
    lines.append("")
    lines.append("| group (source) | prompts | weak → strong | " + " | ".join(names) + " |")
    lines.append("|---|---|---|" + "---|" * len(names))
    for g in report["groups"]:
        cells = [f"{r['apgr']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" for r in g["routers"]]
        where = g["group"] if g["source"] == g["group"] else f"{g['group']} ({g['source']})"
        lines.append(
            f"| {where} | {g['prompts']:,} | {g['weak_quality']:.3f} → "
            f"{g['strong_quality']:.3f} | " + " | ".join(cells) + " |"
        )
    summary = report["summary"]
    means = summary["mean_apgr"]
    lines.append(
        f"| **mean over {summary['sources']} sources** | | | "
        + " | ".join(f"**{means[n]:.3f}**" for n in names)
        + " |"
    )
    lines.append("")
    beaten = summary["sources_beaten_on"]
    lines.append(
        f"{summary['candidate']} beats {' and '.join(summary['beats'])} on {len(beaten)} of "
        f"{summary['sources']} sources{': ' + ', '.join(beaten) if beaten else ''}. (A source "
        f"with several groups counts with the mean of its groups.)"
    )
    lines.append("")
    lines.append("Training sources per fold:")
    lines.append("")
    for f in report["folds"]:
        lines.append(
            f"- held out **{f['held_out']}**: trained on {', '.join(f['trained_on'])} "
            f"({f['rows']:,} prompts)"
        )
    lines.append("")
    return "\n".join(lines)
