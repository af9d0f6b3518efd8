"""The cold-start timeline figure: serve start, readiness, each pull and load, both contestants.

Needs matplotlib (`pip install -e '.[bench]'`); only `bench.py --figure` imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt

from benchmarks.analysis import ModelPlan, median, norm
from benchmarks.contestants import PRODUCT, SHELL

if TYPE_CHECKING:
    from benchmarks.measuring import RunResult

PULL = "#4C72B0"
LOAD = "#DD8452"
SERVE = "#BBBBBB"


def typical(results: Sequence[RunResult], who: str) -> RunResult | None:
    """The run whose time to all pinned is the median one (the lower of the middle two)."""
    runs = sorted(
        (r for r in results if r.who == who and r.pinned and r.to_all_pinned is not None),
        key=lambda r: r.to_all_pinned or 0.0,
    )
    return runs[(len(runs) - 1) // 2] if runs else None


def draw(results: Sequence[RunResult], plans: Sequence[ModelPlan], path: Path) -> None:

    picked = [(who, typical(results, who)) for who in (PRODUCT, SHELL)]
    shown = [(who, r) for who, r in picked if r is not None and r.timeline is not None]
    if not shown:
        return
    names = [norm(p.name) for p in plans]
    fig, axes = plt.subplots(
        len(shown), 1, figsize=(13, 1.2 + 0.55 * (len(names) + 1) * len(shown)), sharex=True
    )
    axes_list = list(axes) if len(shown) > 1 else [axes]
    right = 0.0
    for ax, (who, run) in zip(axes_list, shown, strict=True):
        tl = run.timeline
        assert tl is not None
        t0 = tl.launched
        labels = [
            "ollama serve",
            *[
                f"{n} ({'on disk' if p.present else 'to pull'})"
                for n, p in zip(names, plans, strict=True)
            ],
        ]
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(len(labels) - 0.4, -0.6)
        if tl.serve_start is not None and tl.serve_ready is not None:
            ax.barh(
                0,
                tl.serve_ready - tl.serve_start,
                left=tl.serve_start - t0,
                color=SERVE,
                height=0.5,
                label="serve starting (discovery)",
            )
        for row, name in enumerate(names, start=1):
            if name in tl.pulls:
                span = tl.pulls[name]
                ax.barh(
                    row, span.seconds, left=span.start - t0, color=PULL, height=0.5, label="pull"
                )
            if name in tl.loads:
                span = tl.loads[name]
                ax.barh(
                    row, span.seconds, left=span.start - t0, color=LOAD, height=0.5, label="load"
                )
        marks = [
            (tl.serve_start, "serve started", ":", "grey"),
            (tl.serve_ready, "Ollama answers", "--", "green"),
            (tl.first_preload, "first preload request", "-.", "purple"),
            (tl.pinned_at(names), "all pinned", "-", "black"),
        ]
        for t, label, style, colour in marks:
            if t is not None:
                ax.axvline(t - t0, linestyle=style, color=colour, linewidth=1, label=label)
        ideal = run.ideal
        title = f"{who}: all pinned {run.to_all_pinned or 0:.2f} s after Ollama answered"
        if ideal is not None:
            title += f" (ideal {ideal:.2f} s)"
        ax.set_title(title, loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        right = max(right, (tl.pinned_at(names) or t0) - t0)
    handles: dict[str, Any] = {}
    for ax in axes_list:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    # One legend, outside the plots, so no bar hides behind it.
    axes_list[0].legend(
        handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8
    )
    axes_list[-1].set_xlim(0, right * 1.03)
    axes_list[-1].set_xlabel("seconds since the contestant was launched")
    runs = [r for r in results if r.pinned and r.to_all_pinned is not None]
    per_contestant = max(sum(1 for r in runs if r.who == who) for who, _ in shown)
    fig.suptitle(
        f"Cold start on the fake Ollama: the median run of {per_contestant} for each (medians: "
        + ", ".join(
            f"{who} {median([r.to_all_pinned or 0.0 for r in runs if r.who == who]):.2f} s"
            for who, _ in shown
        )
        + ")",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
