"""Training curves of a `memrl train` run, drawn from its `train/metrics.jsonl` rows (PNG, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memrl.utils.io import atomic_open

# (panel title, y label, [(metric key, legend label)], scale to percent)
PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...], bool], ...] = (
    (
        "accuracy",
        "%",
        (
            ("reward/gt_acc", "train samples (ground truth)"),
            ("val/greedy_acc", "validation greedy"),
            ("val/mean@*", "validation mean@n"),
        ),
        True,
    ),
    ("reward", "mean score", (("critic/score/mean", "trained batch"),), False),
    ("groups", "%", (("batch/mixed_group_frac", "mixed (some right, some wrong)"),), True),
    ("response length", "tokens", (("response_length/mean", "mean"), ("response_length/max", "max")), False),
    ("policy", "", (("actor/entropy", "entropy"), ("actor/ppo_kl", "ppo kl"), ("actor/kl_loss", "kl to ref")), False),
    ("update", "", (("actor/pg_clipfrac", "clip fraction"), ("actor/grad_norm", "grad norm")), False),
)


def curve(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The (steps, values) of one metric over the rows that carry it (validation runs every test_freq steps).

    A key ending in "*" stands for the first logged key with that prefix ("val/mean@*" -> "val/mean@4").
    """
    if key.endswith("*"):
        found = next((k for r in rows for k in r if k.startswith(key[:-1])), None)
        if found is None:
            return [], []
        key = found
    pairs = [(int(r["step"]), float(r[key])) for r in rows if key in r and r[key] is not None and "step" in r]
    return [s for s, _ in pairs], [v for _, v in pairs]


def plot_training_curves(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "training") -> list[str]:
    """One panel per metric family of `PANELS` that the rows carry; writes `path` atomically.

    Args:
        rows: metric dicts, one per step, each with a "step" key (the lines of train/metrics.jsonl).
        path: PNG file to write.

    Returns:
        The titles of the panels drawn (a panel none of whose metrics was logged is left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    for name, ylabel, series, percent in PANELS:
        lines = [(label, *curve(rows, key)) for key, label in series]
        lines = [(label, xs, ys) for label, xs, ys in lines if xs]
        if lines:
            drawn.append((name, ylabel, lines, percent))
    if not drawn:
        return []
    cols = min(3, len(drawn))
    nrows = (len(drawn) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), dpi=110, squeeze=False)
    for ax, (name, ylabel, lines, percent) in zip(axes.flat, drawn):
        for label, xs, ys in lines:
            ys = [100 * y for y in ys] if percent else ys
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(drawn) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return [name for name, *_ in drawn]
