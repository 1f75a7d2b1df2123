"""The report's figures (PNG, headless): curves over training steps and accuracy against the label ratio."""

from __future__ import annotations

import math
import statistics
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from memrl.utils.io import atomic_open


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, layout: bool = True) -> Path:
    if layout:
        fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    _pyplot().close(fig)
    return path


def mean_curve(runs: Sequence[Sequence[dict[str, float]]], key: str) -> tuple[list[int], list[float]]:
    """Per step, the mean of `key` over runs (steps where no run logged a finite value are skipped).

    Args:
        runs: per run, its train/metrics.jsonl rows (each with "step").
        key: a metric name.

    Returns:
        (steps, means).
    """
    by_step: dict[int, list[float]] = {}
    for rows in runs:
        for r in rows:
            v = r.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                by_step.setdefault(int(r["step"]), []).append(float(v))
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def plot_step_curves(
    curves: Mapping[str, Sequence[Sequence[dict[str, float]]]],
    keys: Sequence[tuple[str, str]],
    path: str | Path,
    title: str,
) -> Path | None:
    """One panel per metric, one line per setting (mean over its seeds) against the training step.

    Args:
        curves: {setting: per-run metrics rows}.
        keys: (metric, panel title) pairs; panels without data are dropped.
        path: PNG to write. Returns None (and writes nothing) when no panel has data.
    """
    panels = [(k, t) for k, t in keys if any(mean_curve(runs, k)[0] for runs in curves.values())]
    if not panels:
        return None
    plt = _pyplot()
    legend_h = 0.22 * len(curves) + 0.2  # inches under the panels for one legend line per setting
    fig, axes = plt.subplots(
        1, len(panels), figsize=(max(4.5 * len(panels), 8.0), 3.6 + legend_h), dpi=120, squeeze=False
    )
    for ax, (key, panel_title) in zip(axes[0], panels):
        for setting, runs in curves.items():
            steps, means = mean_curve(runs, key)
            if steps:
                ax.plot(steps, means, label=setting, linewidth=1.2)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    labels = [textwrap.shorten(x, 110, placeholder=" ...") for x in labels]
    fig.legend(handles, labels, loc="lower center", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_h / (3.6 + legend_h), 1, 1))
    return _save(fig, Path(path), layout=False)


def plot_label_ratio(
    points: Mapping[str, Sequence[tuple[float, float, float]]], path: str | Path, reference: float | None = None
) -> Path:
    """Final accuracy against the label ratio, one line per reward mode, the oracle as a dashed line.

    Args:
        points: {reward mode: [(label_ratio, mean, std)]}.
        reference: the oracle's mean (drawn across the plot) or None.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, pts in points.items():
        pts = sorted(pts)
        xs = [p[0] for p in pts]
        ax.errorbar(xs, [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts], marker="o", capsize=3, label=name)
    if reference is not None:
        ax.axhline(100 * reference, linestyle="--", color="gray", label="oracle")
    ax.set_xlabel("label ratio")
    ax.set_ylabel("final greedy accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))
