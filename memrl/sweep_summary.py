"""A Hydra callback that prints a multirun's final results per setting, with mean and spread over seeds.

Used by sweep experiments (e.g. `memrl train -m experiment=toy_memreward`): when every job has ended,
it reads each job's `train/summary.json`, groups the jobs by their overrides except `seed`, and prints
the final greedy accuracy per group as mean +- standard deviation, with the labels each run consumed. It
writes the same table to `summary.md` and `summary.json` in the sweep directory. Jobs that failed or
have not finished are listed, not averaged.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

IGNORED = ("seed=", "hydra.", "task_name=")


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep: {"dir", "setting", "seed", "summary" (None if unfinished)}."""
    rows = []
    for job in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        saved = job / ".hydra" / "overrides.yaml"
        if not saved.is_file():
            continue
        overrides = yaml.safe_load(saved.read_text()) or []
        setting = " ".join(o for o in overrides if not o.startswith(IGNORED)) or "(defaults)"
        seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), "0")
        summary_path = job / "train" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        rows.append({"dir": str(job), "setting": setting, "seed": seed, "summary": summary})
    return rows


def _final(summary: dict[str, Any] | None, key: str) -> float | None:
    return ((summary or {}).get("final") or {}).get(key)


def summarise(rows: list[dict[str, Any]], key: str = "greedy_acc") -> list[dict[str, Any]]:
    """Per setting (in first-seen order): mean, sample std and values of the final `key` over seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["setting"], []).append(r)
    out = []
    for setting, jobs in groups.items():
        done = [j for j in jobs if _final(j["summary"], key) is not None]
        values = [float(_final(j["summary"], key)) for j in done]
        labels = [j["summary"]["labels"]["total_labels_consumed"] for j in done]
        out.append(
            {
                "setting": setting,
                "n": len(values),
                "mean": statistics.fmean(values) if values else math.nan,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
                "seeds": [j["seed"] for j in done],
                "labels_consumed": labels,
                "initial_mean": statistics.fmean([j["summary"]["initial"][key] for j in done])
                if done and all((j["summary"].get("initial") or {}).get(key) is not None for j in done)
                else None,
                "missing": [j["dir"] for j in jobs if j not in done],
            }
        )
    return out


def to_markdown(table: list[dict[str, Any]], key: str = "greedy_acc") -> str:
    best = max((t["mean"] for t in table if t["n"]), default=math.nan)
    lines = [
        f"| setting | final {key} (%) mean +- std | seeds | % of best | labels consumed | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for t in table:
        if not t["n"]:
            lines.append(f"| {t['setting']} | no finished job | 0 | | | |")
            continue
        per_seed = ", ".join(f"{100 * v:.1f}" for v in t["values"])
        lines.append(
            f"| {t['setting']} | {100 * t['mean']:.1f} +- {100 * t['std']:.1f} | {t['n']} | "
            f"{100 * t['mean'] / best:.1f} | {sorted(set(t['labels_consumed']))} | {per_seed} |"
        )
    missing = [m for t in table for m in t["missing"]]
    if missing:
        lines.append("")
        lines.append("unfinished or failed jobs (not averaged): " + ", ".join(missing))
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Prints and writes the table of a finished multirun (hydra.callbacks in an experiment config)."""

    def __init__(self, key: str = "greedy_acc") -> None:
        self.key = key

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from memrl.utils.io import atomic_write_json, atomic_write_text

        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        table = summarise(collect_jobs(sweep_dir), self.key)
        text = to_markdown(table, self.key)
        atomic_write_text(sweep_dir / "summary.md", text)
        atomic_write_json(sweep_dir / "summary.json", table)
        print(f"\nsweep {sweep_dir}:\n{text}")


def main(argv: list[str] | None = None) -> int:
    """`python -m memrl.sweep_summary SWEEP_DIR...`: the table of one or more sweep folders (jobs pooled)."""
    import sys

    dirs = sys.argv[1:] if argv is None else argv
    if not dirs:
        print("usage: python -m memrl.sweep_summary SWEEP_DIR [SWEEP_DIR...]")
        return 2
    rows = [row for d in dirs for row in collect_jobs(d)]
    print(to_markdown(summarise(rows)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
