"""Do new *input families* make the v2 scorer transfer to a benchmark it has never seen?

On top of the shipped design (``gateway.scoring.v2``: wordllama embedding of the last user
message's head and tail, the nine v1 cues, log tokens; ``train_v2``: blend target, ridge 0.3
per source, coordinate-wise median) each variant adds or swaps one block of inputs, and is
scored by the strict leave-one-source-out protocol of ``bench/v2_invariance_search.py`` (its
``Fold``: standardisation, centring and fitting from the training sources' trainable rows only;
the held-out source used for nothing). The families, and what each would add to a request:

* ``rarity`` (o200k_base, the encoding ``gateway.scoring.tokens`` already runs on the request
  path, so the ids come with the count; and cl100k_base, a second encoder): over the tokens of
  the embedded text (head 1,000 + tail 300 characters), the mean, spread and 10/50/90th
  percentiles of log(1 + token id), the share of ids above 20k / 50k / 100k (BPE ids follow
  merge order, roughly frequency), tokens per word and characters per token.
* ``surface``: type/token ratio (first 300 words), mean word length, shares of digits,
  uppercase, punctuation, non-ASCII and whitespace characters, log lines, log sentences,
  log question marks, log blank-line blocks, code fence, answer options (A) / B) ...), an
  imperative opening verb, ends with a question mark, an "Answer:" slot.
* ``question length``: log characters of the last blank-line block (a few-shot prompt's actual
  question), of its stem before the answer options, of the context before it; log blocks.
* ``length shape``: hinges of log tokens at 3, 4, 5, 6 (about 20, 55, 150, 400 tokens) and its
  square; ``len x cues``: log tokens times each v1 cue; ``len x emb``: log tokens times each
  embedding coordinate (a per-prompt-length tilt of the embedding's direction); ``len x emb
  PCs``: log tokens times the embedding's top 4 or 16 principal components, found on each
  fold's training rows only.
* embeddings of the parts: ``tail emb`` (the last 300 characters alone, where a few-shot
  prompt's actual question sits), ``head+tail emb`` instead of the joint one (first 1,000 and
  last 300 characters as two blocks), ``tail emb only`` instead of the joint one, and
  ``maxpool emb`` (the coordinate-wise max over the embedded text's wordllama token vectors, the
  same table the mean pools).

The *nested* figure: for each held-out source, the variant with the best mean over the six
other sources (each scored by a model trained without it and without the held-out source) is
chosen, then scored once on the held-out source. A paired bootstrap over prompts (1,000
resamples per group, ``bootstrap.resamples_for`` seed 0; the same resamples for both scorers)
gives the difference in leave-one-source-out mean between the best variant (and the nested
choice) and the shipped design.

Run:  python bench/v2_feature_search.py [--out bench/results/v2-feature-search.json]
About 4-5 minutes on 2 cores (three embedding passes over 20,190 prompts, then small solves;
``--cache blocks.npz`` keeps the inputs for a rerun).
Deterministic (figures rounded to 4 decimals in the output).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters._offline import prepare_offline_env
from gateway.scoring.embedding import DIMENSIONS, _model, embed_many
from gateway.scoring.features import last_user_text
from gateway.scoring.heuristic import FEATURES, ScorerWeights
from gateway.scoring.tokens import encode
from gateway.scoring.v2 import EMBED_HEAD_CHARS, EMBED_TAIL_CHARS, text_of
from gateway.tools.scorer import sources
from gateway.tools.scorer.bootstrap import apgr_of, resamples_for
from gateway.tools.scorer.evaluate import v1_scores
from gateway.tools.scorer.labels import Labelled
from gateway.tools.scorer.train_v2 import design

sys.path.insert(0, str(Path(__file__).resolve().parent))
from v2_design_search import Held, groups_of
from v2_invariance_search import ALPHA, Data, Fold

Array = NDArray[np.float64]
RESAMPLES = 1000
EMB = slice(0, DIMENSIONS)
CUES = slice(DIMENSIONS, DIMENSIONS + len(FEATURES))
LOG_TOKENS = DIMENSIONS + len(FEATURES)

# -- the new inputs --------------------------------------------------------------------------


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def rarity(ids: Sequence[int], text: str) -> list[float]:
    """Token-rarity statistics of one text's BPE ids (10 numbers)."""
    if not ids:
        return [0.0] * 10
    lg = np.log1p(np.asarray(ids, dtype=np.float64))
    arr = np.asarray(ids)
    q10, q50, q90 = np.percentile(lg, [10, 50, 90])
    words = max(1, len(text.split()))
    return [
        float(lg.mean()),
        float(lg.std()),
        float(q10),
        float(q50),
        float(q90),
        float((arr >= 20000).mean()),
        float((arr >= 50000).mean()),
        float((arr >= 100000).mean()),
        math.log(len(ids) / words),
        math.log(max(1, len(text)) / len(ids)),
    ]


_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_OPTION = re.compile(r"(?:^|\n)\s*\(?[A-Ea-e][.):]\s")
_SENTENCE = re.compile(r"[.?!](?:\s|$)")
_IMPERATIVE = frozenset(
    "write|explain|describe|give|create|list|generate|compose|summarize|summarise|translate|"
    "rewrite|draft|design|implement|find|calculate|compute|solve|provide|tell|make|suggest|"
    "name|identify|classify|compare|convert|edit|imagine|pretend|act|help|show|determine|"
    "evaluate|analyze|analyse|prove|plan|outline|brainstorm|recommend".split("|")
)


def surface(text: str) -> list[float]:
    """Surface statistics of the last user message (17 numbers)."""
    n = max(1, len(text))
    words = text.split()
    lower = [w.lower() for w in words[:300]]
    first = re.sub(r"[^a-z]", "", words[0].lower()) if words else ""
    stripped = text.rstrip()
    return [
        len(set(lower)) / max(1, len(lower)),
        float(np.mean([len(w) for w in words])) if words else 0.0,
        sum(c.isdigit() for c in text) / n,
        sum(c.isupper() for c in text) / n,
        sum(c in _PUNCT for c in text) / n,
        sum(not c.isascii() for c in text) / n,
        sum(c.isspace() for c in text) / n,
        math.log1p(text.count("\n") + 1),
        math.log1p(len(_SENTENCE.findall(text))),
        math.log1p(text.count("?")),
        math.log1p(text.count("\n\n")),
        float("```" in text),
        float(len(_OPTION.findall(text)) >= 2),
        float(first in _IMPERATIVE),
        float(stripped.endswith("?")),
        float("answer:" in text[-400:].lower()),
        math.log1p(len(_OPTION.findall(text))),
    ]


def question_length(text: str) -> list[float]:
    """How long the question itself is, apart from the context before it (4 numbers): log
    characters of the last blank-line block, of its stem (before the first answer option),
    of everything before that block, and log blocks. A few-shot prompt's length counts its
    shots; this block's, the question's."""
    stripped = text.strip()
    before, _, last = stripped.rpartition("\n\n")
    option = _OPTION.search(last)
    stem = last[: option.start()] if option else last
    return [
        math.log1p(len(last)),
        math.log1p(len(stem)),
        math.log1p(len(before)),
        math.log1p(stripped.count("\n\n")),
    ]


def maxpool(texts: Sequence[str]) -> Array:
    """The coordinate-wise max of each text's wordllama token vectors (zeros if none)."""
    model = _model()
    table = np.asarray(model.embedding, dtype=np.float32)
    out = np.zeros((len(texts), DIMENSIONS))
    for start in range(0, len(texts), 64):
        for k, enc in enumerate(model.tokenize(list(texts[start : start + 64])), start=start):
            ids = np.asarray(enc.ids)[np.asarray(enc.attention_mask) > 0]
            if len(ids):
                out[k] = table[np.clip(ids, 0, len(table) - 1)].max(axis=0)
    return out


def blocks(items: Sequence[Labelled]) -> dict[str, Array]:
    """Every input block, one row per prompt."""
    texts = [last_user_text(i.messages) for i in items]
    embedded = [text_of(i.messages) for i in items]
    out: dict[str, Array] = {"base": design(items)}
    print("base ready", file=sys.stderr)
    prepare_offline_env()
    import tiktoken

    cl100k: _Encoder = tiktoken.get_encoding("cl100k_base")
    out["rarity"] = np.array([rarity(encode(t), t) for t in embedded])
    out["rarity cl100k"] = np.array([rarity(cl100k.encode_ordinary(t), t) for t in embedded])
    out["surface"] = np.array([surface(t) for t in texts])
    out["question length"] = np.array([question_length(t) for t in texts])
    tokens = out["base"][:, LOG_TOKENS]
    out["length shape"] = np.column_stack(
        [np.maximum(tokens - k, 0.0) for k in (3.0, 4.0, 5.0, 6.0)] + [tokens**2]
    )
    out["len x cues"] = out["base"][:, CUES] * tokens[:, None]
    out["len x emb"] = out["base"][:, EMB] * tokens[:, None]
    print("scalar blocks ready", file=sys.stderr)
    out["tail emb"] = embed_many([t[-EMBED_TAIL_CHARS:] for t in texts]).astype(np.float64)
    out["head emb"] = embed_many([t[:EMBED_HEAD_CHARS] for t in texts]).astype(np.float64)
    out["maxpool emb"] = maxpool(embedded)
    print("embedding blocks ready", file=sys.stderr)
    return out


SCALARS = ("rarity", "surface", "length shape")
# name -> (blocks, whether the joint embedding is kept, ridge penalty)
VARIANTS: dict[str, tuple[tuple[str, ...], bool, float]] = {
    "shipped": ((), True, ALPHA),
    "+rarity": (("rarity",), True, ALPHA),
    "+rarity cl100k": (("rarity cl100k",), True, ALPHA),
    "+surface": (("surface",), True, ALPHA),
    "+length shape": (("length shape",), True, ALPHA),
    "+question length": (("question length",), True, ALPHA),
    "+surface +question length": (("surface", "question length"), True, ALPHA),
    "+surface +rarity cl100k": (("surface", "rarity cl100k"), True, ALPHA),
    "+len x cues": (("len x cues",), True, ALPHA),
    "+rarity +surface +length shape": (SCALARS, True, ALPHA),
    "+rarity +surface +length shape alpha=1": (SCALARS, True, 1.0),
    "+tail emb": (("tail emb",), True, ALPHA),
    "+tail emb alpha=1": (("tail emb",), True, 1.0),
    "head+tail emb (no joint)": (("head emb", "tail emb"), False, ALPHA),
    "head+tail emb (no joint) alpha=1": (("head emb", "tail emb"), False, 1.0),
    "tail emb only (no joint)": (("tail emb",), False, ALPHA),
    "+maxpool emb": (("maxpool emb",), True, ALPHA),
    "+maxpool emb alpha=1": (("maxpool emb",), True, 1.0),
    "+len x emb": (("len x emb",), True, ALPHA),
    "+len x emb alpha=1": (("len x emb",), True, 1.0),
    "+tail emb +maxpool emb alpha=1": (("tail emb", "maxpool emb"), True, 1.0),
    "+everything alpha=1": (
        (*SCALARS, "len x cues", "tail emb", "maxpool emb", "len x emb"),
        True,
        1.0,
    ),
    "+everything alpha=3": (
        (*SCALARS, "len x cues", "tail emb", "maxpool emb", "len x emb"),
        True,
        3.0,
    ),
}

# log tokens x the embedding's top principal components (found per fold): name -> (k, penalty)
FOLD_PCA: dict[str, tuple[int, float]] = {
    "+len x emb PCs k=4 (per-fold PCA)": (4, ALPHA),
    "+len x emb PCs k=16 (per-fold PCA)": (16, ALPHA),
}

# Measured once (median of 300 calls, a 1,126-token / 5,686-character prompt, the 2-core dev
# machine under load; the shipped v2 inputs took 1.23 ms there, documented 0.7 ms unloaded).
COST = {
    "reference": "shipped v2 inputs (embedding + cues + token count): 1.23 ms in the same run",
    "rarity": "o200k ids of the embedded text: 0.07 ms to encode (the token count already "
    "encodes up to 2,048 characters, so reusable), 0.17 ms for the statistics as written "
    "(np.percentile's overhead; a sort would do); cl100k: 0.33 ms, a second encoder and its "
    "load at start-up",
    "surface": "2.1 ms as written (per-character Python loops over the whole message); "
    "would need str.translate/count rewrites and a length cap to fit a 1 ms budget",
    "question length": "an rpartition and one regex search: 0.03 ms",
    "length shape / len x cues / len x emb / len x emb PCs": "arithmetic on inputs already "
    "computed (PCs: a 256 x k product): <0.01 ms",
    "tail emb / head emb": "a second wordllama embed: 0.34 ms for the last 300 characters, "
    "0.81 ms for the first 1,000 (head+tail instead of joint: both, ~+0.3 ms net)",
    "maxpool emb": "0.87 ms as written (a second tokenize of the embedded text and a max over "
    "its token vectors); sharing the tokenize with the mean embedding would leave the max, "
    "~0.05 ms",
}


# -- scoring -----------------------------------------------------------------------------------


def fold_coefs(data: Data, keys: Sequence[frozenset[str]], alpha: float) -> dict[Any, Array]:
    """Raw-input weights of the shipped design per training set (one fold at a time)."""
    out: dict[Any, Array] = {}
    for key in keys:
        fold = Fold(data, key)
        out[key] = fold.to_raw(fold.ridge_median(alpha=alpha))
    return out


def pca_scores(
    items: Sequence[Labelled],
    base: Array,
    trainable: NDArray[np.bool_],
    left_out: frozenset[str],
    k: int,
    alpha: float,
) -> Array:
    """Scores of the shipped design plus log tokens x the top ``k`` principal components of
    the embedding, the components found on this fold's training rows only."""
    origin = np.array([i.origin for i in items])
    rows = trainable & ~np.isin(origin, sorted(left_out))
    emb = base[:, EMB]
    centre = emb[rows].mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((emb[rows] - centre).T))
    pcs = (emb - centre) @ vecs[:, ::-1][:, :k]
    x = np.hstack([base, pcs * base[:, LOG_TOKENS : LOG_TOKENS + 1]])
    fold = Fold(Data(items, x, trainable, pairs=False), left_out)
    scores: Array = x @ fold.to_raw(fold.ridge_median(alpha=alpha))
    return scores


def paired_bootstrap(
    a: dict[str, Array], b: dict[str, Array], by_source: dict[str, Held], group: Sequence[str]
) -> dict[str, Any]:
    """LOSO mean of scores ``a`` minus that of ``b`` (per-source score vectors over every
    prompt), its 95% interval over prompt resamples, and the share of resamples above 0."""
    diffs = np.zeros(RESAMPLES)
    for o, held in by_source.items():
        per_group = []
        for rows, weak, strong in held:
            draws = resamples_for(group[int(rows[0])], len(rows), RESAMPLES, 0)
            sa, sb = a[o][rows], b[o][rows]
            per_group.append(
                [
                    apgr_of(sa[d], weak[d], strong[d]) - apgr_of(sb[d], weak[d], strong[d])
                    for d in draws
                ]
            )
        diffs += np.nan_to_num(np.mean(per_group, axis=0)) / len(by_source)
    point = float(np.mean([score_of(a[o], h) - score_of(b[o], h) for o, h in by_source.items()]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "difference": round(point, 4),
        "ci95": [round(float(low), 4), round(float(high), 4)],
        "share_above_0": round(float((diffs > 0).mean()), 4),
    }


def baselines_of(
    items: Sequence[Labelled], by_source: dict[str, Held], origins: Sequence[str]
) -> dict[str, dict[str, float]]:
    """The v1 scorer's and prompt length's figure on each source."""
    length = np.array([float(len(last_user_text(i.messages))) for i in items])
    v1 = np.array(v1_scores(items, ScorerWeights()))
    return {
        "v1 scorer": {o: score_of(v1, by_source[o]) for o in origins},
        "prompt length": {o: score_of(length, by_source[o]) for o in origins},
    }


def beating(
    per: dict[str, float], baselines: dict[str, dict[str, float]], origins: Sequence[str]
) -> list[str]:
    """The sources where ``per`` beats every baseline."""
    return [o for o in origins if all(per[o] > baselines[b][o] for b in baselines)]


def score_of(scores: Array, held: Held) -> float:
    return float(np.mean([apgr_of(scores[rows], weak, strong) for rows, weak, strong in held]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/v2-feature-search.json"))
    parser.add_argument("--cache", type=Path, help="keep the input blocks in this .npz")
    parser.add_argument("--only", default="", help="run only variants whose name has this")
    args = parser.parse_args()

    items = list(sources.every_source().items)
    dropped = sources.training_exclusions()
    trainable = np.array([i.id not in dropped for i in items])
    if args.cache is not None and args.cache.exists():
        with np.load(args.cache) as cached:
            inputs = {k: np.asarray(cached[k], dtype=np.float64) for k in cached.files}
    else:
        inputs = blocks(items)
        if args.cache is not None:
            np.savez(args.cache, **inputs)  # type: ignore[arg-type]
    origins = sorted({i.origin for i in items})
    by_source = groups_of(items)
    keys = [frozenset({o}) for o in origins] + [
        frozenset({o, i}) for o in origins for i in origins if i < o
    ]

    outer: dict[str, dict[str, float]] = {}
    inner: dict[str, dict[tuple[str, str], float]] = {}
    held_scores: dict[str, dict[str, Array]] = {}  # variant -> held-out source -> scores
    names = [n for n in [*VARIANTS, *FOLD_PCA] if args.only in n or n == "shipped"]
    for name in names:
        if name in FOLD_PCA:
            k, alpha = FOLD_PCA[name]
            scores = {
                key: pca_scores(items, inputs["base"], trainable, key, k, alpha) for key in keys
            }
        else:
            extra, joint, alpha = VARIANTS[name]
            base = inputs["base"] if joint else inputs["base"][:, DIMENSIONS:]
            x = np.hstack([base, *(inputs[b] for b in extra)])
            coefs = fold_coefs(Data(items, x, trainable, pairs=False), keys, alpha)
            scores = {key: x @ c for key, c in coefs.items()}
        held_scores[name] = {o: scores[frozenset({o})] for o in origins}
        outer[name] = {o: score_of(held_scores[name][o], by_source[o]) for o in origins}
        inner[name] = {
            (o, i): score_of(scores[frozenset({o, i})], by_source[i])
            for o in origins
            for i in origins
            if i != o
        }
        print(f"{name}: {np.mean(list(outer[name].values())):.4f}", file=sys.stderr)

    baselines = baselines_of(items, by_source, origins)

    def beats(per: dict[str, float]) -> list[str]:
        return beating(per, baselines, origins)

    def size(name: str) -> int:
        if name in FOLD_PCA:
            return LOG_TOKENS + 1 + FOLD_PCA[name][0]
        extra, joint, _ = VARIANTS[name]
        kept = LOG_TOKENS + 1 if joint else LOG_TOKENS + 1 - DIMENSIONS
        return kept + sum(int(inputs[b].shape[1]) for b in extra)

    def mean(per: dict[str, float]) -> float:
        return float(np.mean(list(per.values())))

    chosen = {
        o: max(names, key=lambda n: float(np.mean([inner[n][(o, i)] for i in origins if i != o])))
        for o in origins
    }
    nested_figures = {o: outer[chosen[o]][o] for o in origins}
    ranking = sorted(names, key=lambda n: -mean(outer[n]))
    best = next(n for n in ranking if n != "shipped")
    nested_scores = {o: held_scores[chosen[o]][o] for o in origins}
    group = [i.group for i in items]

    def compare(scores: dict[str, Array]) -> dict[str, Any]:
        return paired_bootstrap(scores, held_scores["shipped"], by_source, group)

    result: dict[str, Any] = {
        "benchmark": "v2 feature search: leave-one-source-out mean APGR of the shipped design "
        "with new input families (held-out source used for nothing, standardisation included)",
        "baselines": {
            b: {"mean": round(mean(v), 4), "per_source": {o: round(a, 4) for o, a in v.items()}}
            for b, v in baselines.items()
        },
        "variants": [
            {
                "variant": n,
                "inputs": size(n),
                "alpha": FOLD_PCA[n][1] if n in FOLD_PCA else VARIANTS[n][2],
                "mean": round(mean(outer[n]), 4),
                "beats_v1_and_length": len(beats(outer[n])),
                "sources_beaten_on": beats(outer[n]),
                "per_source": {o: round(a, 4) for o, a in outer[n].items()},
            }
            for n in ranking
        ],
        "nested": {
            "mean": round(mean(nested_figures), 4),
            "beats_v1_and_length": len(beats(nested_figures)),
            "sources_beaten_on": beats(nested_figures),
            "per_source": {
                o: {"chosen": chosen[o], "apgr": round(nested_figures[o], 4)} for o in origins
            },
        },
        "paired_bootstrap_vs_shipped": {
            "what": f"LOSO mean minus the shipped design's, {RESAMPLES} paired prompt resamples "
            "per group (seed 0)",
            f"best variant ({best})": compare(held_scores[best]),
            "nested choice": compare(nested_scores),
        },
        "request_path_cost": COST,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"best {best}: {mean(outer[best]):.4f}; nested {result['nested']['mean']}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
