"""``tiergate eval-router``: a scorer's APGR and CPT(50%)/CPT(80%) per group of a labels file,
next to the random, prompt-length and oracle baselines (and the v1 scorer).

With ``kfold`` the learned scorer is trained per fold on the other folds (every group's) and
scores only its held-out fold, so no figure comes from a prompt the model was trained on. Folds
are assigned per group by the SHA-256 of each prompt's id: no random state, the same file gives
the same folds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.scoring.features import RequestFeatures, last_user_text
from gateway.scoring.heuristic import ScorerWeights, score
from gateway.tools.scorer.labels import Labelled, LabelSet
from gateway.tools.scorer.quality import Curve, apgr, cpt, curve


@dataclass(frozen=True, slots=True)
class RouterResult:
    name: str
    apgr: float
    cpt50: float
    cpt80: float
    curve: Curve


@dataclass(frozen=True, slots=True)
class GroupResult:
    group: str
    prompts: int
    weak_quality: float
    strong_quality: float
    routers: tuple[RouterResult, ...]


def baselines() -> dict[str, Callable[[Labelled], float]]:
    """Random (one score for all: the expected random curve), prompt length, oracle."""
    return {
        "random": lambda _item: 0.0,
        "prompt length": lambda item: float(len(last_user_text(item.messages))),
        "oracle": lambda item: item.gain,
    }


def v1_scores(items: Sequence[Labelled], weights: ScorerWeights) -> list[float]:
    return [score(i.messages, i.max_tokens, weights).value for i in items]


def assign_folds(items: Sequence[Labelled], k: int) -> list[int]:
    """Per group, items ranked by the hash of their id and dealt round-robin into k folds
    (so every fold gets an equal share of every group)."""
    folds = [0] * len(items)
    by_group: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_group.setdefault(item.group, []).append(index)
    for members in by_group.values():
        ranked = sorted(members, key=lambda i: (hashlib.sha256(items[i].id.encode()).digest(), i))
        for rank, index in enumerate(ranked):
            folds[index] = rank % k
    return folds


def kfold_scores(
    items: Sequence[Labelled],
    k: int,
    config: Any,
    progress: Callable[[str], None] = lambda _msg: None,
    feats: Sequence[RequestFeatures] | None = None,
) -> list[float]:
    """Out-of-fold learned scores: fold f is scored by a model trained on the other folds."""
    from gateway.scoring.learned import parse_artifact
    from gateway.tools.scorer.train import dumps, featurize, fit

    if k < 2:
        raise ValueError("--kfold needs at least 2 folds")
    if feats is None:
        feats = featurize(items, config.buckets)
    folds = assign_folds(items, k)
    out = [0.0] * len(items)
    for f in range(k):
        train = [i for i in range(len(items)) if folds[i] != f]
        progress(f"fold {f + 1}/{k}: training on {len(train)} prompts")
        artifact = fit([items[i] for i in train], [feats[i] for i in train], config)
        scorer = parse_artifact(dumps(artifact), f"fold {f + 1}")
        for i in range(len(items)):
            if folds[i] == f:
                out[i] = scorer.probability(feats[i])
    return out


def evaluate(labels: LabelSet, routers: Mapping[str, Sequence[float]]) -> list[GroupResult]:
    """Each router's scores (aligned with ``labels.items``) and the baselines, per group."""
    results = []
    index = {id(item): n for n, item in enumerate(labels.items)}
    for group in labels.groups():
        members = labels.of(group)
        weak = [i.weak for i in members]
        strong = [i.strong for i in members]
        rows = []
        named: dict[str, list[float]] = {
            name: [scores[index[id(i)]] for i in members] for name, scores in routers.items()
        }
        named.update({name: [fn(i) for i in members] for name, fn in baselines().items()})
        for name, scores in named.items():
            c = curve(scores, weak, strong)
            rows.append(RouterResult(name, apgr(c), cpt(c, 0.5), cpt(c, 0.8), c))
        results.append(
            GroupResult(
                group=group,
                prompts=len(members),
                weak_quality=sum(weak) / len(weak),
                strong_quality=sum(strong) / len(strong),
                routers=tuple(rows),
            )
        )
    return results


def to_json(results: Sequence[GroupResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "groups": [
            {
                "group": g.group,
                "prompts": g.prompts,
                "weak_quality": round(g.weak_quality, 4),
                "strong_quality": round(g.strong_quality, 4),
                "routers": [
                    {
                        "name": r.name,
                        "apgr": round(r.apgr, 4),
                        "cpt50": round(r.cpt50, 4),
                        "cpt80": round(r.cpt80, 4),
                    }
                    for r in g.routers
                ],
            }
            for g in results
        ],
    }


def to_markdown(report: dict[str, Any]) -> str:
    """The JSON report (``to_json``) as markdown: what was measured, then a table per group."""
    lines = ["# Router evaluation", ""]
    if report.get("kfold"):
        lines.append(
            f"Learned scorer figures are {report['kfold']}-fold cross-validated: each fold is "
            f"scored by a model trained on the other folds only (all groups pooled; folds "
            f"assigned per group by the hash of each prompt's id)."
        )
    if report.get("warning"):
        lines.append(f"**Warning:** {report['warning']}.")
    lines.append(
        f"Labels: {', '.join(report.get('labels', []))}; {report.get('prompts', 0):,} prompts; "
        f"{report.get('contaminated_left_out', 0)} marked contaminated left out (as RouteLLM "
        f"does). Random is the expected curve of a random router (the diagonal); prompt length "
        f"routes the longest prompts first; oracle routes by the known outcome."
    )
    lines.append("")
    for g in report["groups"]:
        lines.append(
            f"## {g['group']} ({g['prompts']:,} prompts; weak {g['weak_quality']:.3f} → strong "
            f"{g['strong_quality']:.3f})"
        )
        lines.append("")
        lines.append("| router | APGR | CPT(50%) | CPT(80%) |")
        lines.append("|---|---|---|---|")
        for r in g["routers"]:
            lines.append(f"| {r['name']} | {r['apgr']:.3f} | {r['cpt50']:.1%} | {r['cpt80']:.1%} |")
        lines.append("")
    return "\n".join(lines)
