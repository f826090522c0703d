"""The PGR curves of ``tiergate eval-router`` as a PNG (matplotlib, headless; an optional
dependency: ``pip install 'tiergate[train]'``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gateway.tools.scorer.evaluate import GroupResult


def save_plot(results: Sequence[GroupResult], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'tiergate[train]'") from None
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.6), squeeze=False)
    for ax, group in zip(axes[0], results, strict=True):
        for router in group.routers:
            style = "--" if router.name in ("random", "oracle") else "-"
            ax.plot(
                [100 * s for s in router.curve.share],
                router.curve.pgr,
                style,
                linewidth=1.4,
                label=f"{router.name} (APGR {router.apgr:.2f})",
            )
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.axhline(0.5, color="grey", linewidth=0.4, linestyle=":")
        ax.set_title(f"{group.group} (n={group.prompts:,})")
        ax.set_xlabel("calls to the strong model (%)")
        ax.set_ylabel("PGR (share of the weak→strong gap recovered)")
        ax.set_xlim(0, 100)
        ax.set_ylim(-0.05, 1.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamps in the file: the same results give the same bytes.
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
