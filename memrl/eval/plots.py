"""Plots of evaluation results (PNG, headless)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memrl.utils.io import atomic_open


def plot_pass_at_k(results: Mapping[str, Mapping[str, Any]], path: str | Path, title: str = "pass@k") -> Path:
    """pass@k against k (log2 axis), one line per benchmark.

    Args:
        results: {benchmark: {"pass@k": {k: value}, ...}}; benchmarks without pass@k are skipped.
        path: PNG file to write (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, res in results.items():
        curve = res.get("pass@k") or {}
        if not curve:
            continue
        ks = sorted(int(k) for k in curve)
        ax.plot(ks, [100 * curve[k] if k in curve else 100 * curve[str(k)] for k in ks], marker="o", label=name)
    ax.set_xscale("log", base=2)
    all_ks = sorted({int(k) for res in results.values() for k in (res.get("pass@k") or {})})
    if all_ks:
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
        ax.minorticks_off()
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb", encoding=None) as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return Path(path)
