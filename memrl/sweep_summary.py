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
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from memrl.utils.io import atomic_write_json, atomic_write_text

# not part of a setting: the seed is averaged over; the others do not change results
IGNORED = ("seed=", "hydra.", "task_name=", "trainer.progress=")


def collect_jobs(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep: {"dir", "setting", "seed", "overrides", "summary" (None if unfinished)}."""
    rows = []
    for job in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        saved = job / ".hydra" / "overrides.yaml"
        if not saved.is_file():
            continue
        overrides = yaml.safe_load(saved.read_text()) or []
        # sorted: the same setting launched by two sweeps (values swept in one, fixed in the other) may list
        # its overrides in another order
        setting = " ".join(sorted(o for o in overrides if not o.startswith(IGNORED))) or "(defaults)"
        seed = next((o.split("=", 1)[1] for o in overrides if o.startswith("seed=")), "0")
        summary_path = job / "train" / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        rows.append({"dir": str(job), "setting": setting, "seed": seed, "overrides": overrides, "summary": summary})
    return rows


def final_value(summary: dict[str, Any] | None, key: str) -> float | None:
    """A final-evaluation value: a top-level key (greedy_acc, mean@16, distinct@16) or pass@K."""
    final = (summary or {}).get("final") or {}
    if key.startswith("pass@") and key not in final:
        return (final.get("pass@k") or {}).get(key.split("@", 1)[1])
    return final.get(key)


def _stats(values: list[float]) -> tuple[float, float]:
    return (statistics.fmean(values) if values else math.nan, statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(rows: list[dict[str, Any]], key: str = "greedy_acc", extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Per setting (in first-seen order): mean, sample std and values of the final `key` over seeds.

    `extra` keys (e.g. pass@1, pass@16, distinct@16) get their mean and std under "extra" {key: [mean, std]}.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["setting"], []).append(r)
    out = []
    for setting, jobs in groups.items():
        done = [j for j in jobs if final_value(j["summary"], key) is not None]
        values = [float(final_value(j["summary"], key)) for j in done]
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
                "extra": {
                    k: list(_stats([float(v) for j in done if (v := final_value(j["summary"], k)) is not None]))
                    for k in extra
                },
            }
        )
    return out


def _cell(key: str, mean: float, std: float) -> str:
    """Rates in percent; counts (distinct@n) as they are."""
    scale = 1.0 if key.startswith("distinct@") else 100.0
    return f"{scale * mean:.1f} +- {scale * std:.1f}" if not math.isnan(mean) else "n/a"


def reference(table: list[dict[str, Any]]) -> tuple[str, float]:
    """What "% of" compares with: the reward=oracle row when there is one, else the best row."""
    oracle = next((t for t in table if t["n"] and "reward=oracle" in t["setting"].split()), None)
    if oracle is not None:
        return "oracle", oracle["mean"]
    return "best", max((t["mean"] for t in table if t["n"]), default=math.nan)


def to_markdown(table: list[dict[str, Any]], key: str = "greedy_acc") -> str:
    """The table: per setting, the final `key` (mean +- std), seeds, % of oracle (or best), labels, per-seed
    values, then the extra columns of `summarise`; unfinished jobs listed under it."""
    ref_name, ref = reference(table)
    extra = list(table[0].get("extra", {})) if table else []
    head = "".join(f" {k} |" for k in extra)
    lines = [
        f"| setting | final {key} (%) mean +- std | seeds | % of {ref_name} | labels consumed | per seed |{head}",
        "|---|---|---|---|---|---|" + "---|" * len(extra),
    ]
    for t in table:
        if not t["n"]:
            lines.append(f"| {t['setting']} | no finished job | 0 | | | |" + " |" * len(extra))
            continue
        per_seed = ", ".join(f"{100 * v:.1f}" for v in t["values"])
        cells = "".join(f" {_cell(k, *t['extra'][k])} |" for k in extra)
        lines.append(
            f"| {t['setting']} | {100 * t['mean']:.1f} +- {100 * t['std']:.1f} | {t['n']} | "
            f"{100 * t['mean'] / ref:.1f} | {sorted(set(t['labels_consumed']))} | {per_seed} |{cells}"
        )
    missing = [m for t in table for m in t["missing"]]
    if missing:
        lines.append("")
        lines.append("unfinished or failed jobs (not averaged): " + ", ".join(missing))
    return "\n".join(lines) + "\n"


class SweepSummary(Callback):
    """Prints and writes the table of a finished multirun (hydra.callbacks in an experiment config)."""

    def __init__(self, key: str = "greedy_acc", keys: list[str] | None = None) -> None:
        # keys: the columns, the first one ranked ("% of oracle" or of the best); key: a single column
        keys = list(keys) if keys else [key]
        self.key, self.extra = keys[0], tuple(keys[1:])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        table = summarise(collect_jobs(sweep_dir), self.key, self.extra)
        text = to_markdown(table, self.key)
        atomic_write_text(sweep_dir / "summary.md", text)
        atomic_write_json(sweep_dir / "summary.json", table)
        print(f"\nsweep {sweep_dir}:\n{text}")


def main(argv: list[str] | None = None) -> int:
    """`python -m memrl.sweep_summary [--keys greedy_acc,pass@1] SWEEP_DIR...`: the table of sweep folders (pooled)."""
    args = sys.argv[1:] if argv is None else list(argv)
    keys = ["greedy_acc"]
    if len(args) >= 2 and args[0] == "--keys":
        keys = [k for k in args[1].split(",") if k]
        args = args[2:]
    if not args:
        print("usage: python -m memrl.sweep_summary [--keys greedy_acc,pass@1,...] SWEEP_DIR [SWEEP_DIR...]")
        return 2
    rows = [row for d in args for row in collect_jobs(d)]
    print(to_markdown(summarise(rows, keys[0], tuple(keys[1:])), keys[0]), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
