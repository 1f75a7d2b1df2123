"""`memrl report SWEEP_DIR...`: finished jobs of one or more sweeps as a markdown report with plots.

Jobs are grouped by their overrides except the seed (`memrl.sweep_summary`); each group is one row with
the mean +- sample std over its finished seeds of the final evaluation: greedy accuracy, pass@1 (the mean
over the n samples) and pass@k, distinct answers among the n samples, the labels the run consumed, and
"% of oracle" when the sweep has a `reward=oracle` row (else % of the best row). Failed or unfinished
jobs are listed, not averaged. Each row carries the command that regenerates it.

Figures, when their data exist: pass@k curves; final accuracy against the label ratio (when the jobs
differ in it); reward-prediction quality over training (MemReward's metrics_only/reward_*); diversity
over training (MEDS' meds/*).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from memrl.errors import UserError
from memrl.sweep_summary import IGNORED, collect_jobs, summarise

QUALITY_KEYS = [
    ("metrics_only/reward_f1", "reward F1 on unlabelled rollouts"),
    ("metrics_only/reward_fpr", "reward false-positive rate"),
    ("metrics_only/acc_unlabelled", "true accuracy on unlabelled queries"),
]
DIVERSITY_KEYS = [
    ("meds/distinct_answers", "distinct answers per group"),
    ("meds/answer_novelty", "answers new for their prompt"),
    ("meds/top1_eigen_ratio", "top-1 eigenvalue ratio of the features"),
    ("meds/penalised_frac", "share of rollouts penalised"),
]
TRAINING_KEYS = [
    ("reward/acc_generated", "training accuracy (generated)"),
    ("actor/entropy", "policy entropy"),
]


def _metrics(job_dir: str) -> list[dict[str, float]]:
    path = Path(job_dir) / "train" / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill
    return rows


def _config(job_dir: str) -> dict[str, Any]:
    path = Path(job_dir) / ".hydra" / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _command(overrides: Sequence[str], seeds: Sequence[str]) -> str:
    kept = [o for o in overrides if not o.startswith(IGNORED)]
    seed = ",".join(sorted(set(seeds), key=lambda s: (len(s), s)))
    return "memrl train -m " + " ".join([*kept, f"seed={seed}"])


def _pct(mean: float, std: float, scale: float = 100.0) -> str:
    return "n/a" if mean is None or math.isnan(mean) else f"{scale * mean:.1f} +- {scale * std:.1f}"


def short_labels(settings: Sequence[str]) -> dict[str, str]:
    """Legend labels: each setting without the overrides every setting shares."""
    tokens = [s.split() for s in settings]
    common = set.intersection(*(set(t) for t in tokens)) if tokens and len(tokens) > 1 else set()
    return {s: " ".join(x for x in t if x not in common) or s for s, t in zip(settings, tokens)}


def report_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Extra columns present in the finished jobs: pass@k for every k evaluated, distinct@n."""
    ks: set[int] = set()
    ns: set[int] = set()
    for r in rows:
        final = (r["summary"] or {}).get("final") or {}
        ks |= {int(k) for k in (final.get("pass@k") or {})}
        ns |= {int(k.split("@")[1]) for k in final if k.startswith("distinct@")}
    return [f"pass@{k}" for k in sorted(ks)] + [f"distinct@{n}" for n in sorted(ns)]


def build_report(dirs: Sequence[str | Path], out_dir: str | Path, title: str = "memrl report") -> Path:
    """Write out_dir/report.md (+ report.json and the figures); returns the markdown's path."""
    from memrl.eval.plots import plot_pass_at_k
    from memrl.report.plots import plot_label_ratio, plot_step_curves
    from memrl.utils.io import atomic_write_json, atomic_write_text

    missing_dirs = [str(d) for d in dirs if not Path(d).is_dir()]
    if missing_dirs:
        raise UserError(f"no such sweep folder: {', '.join(missing_dirs)}")
    rows = [row for d in dirs for row in collect_jobs(d)]
    if not rows:
        raise UserError(
            f"no job folders (with .hydra/overrides.yaml) in {', '.join(map(str, dirs))}: give the folder of a "
            "multirun (outputs/<task>/multiruns/<date>)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = report_columns(rows)
    table = summarise(rows, "greedy_acc", tuple(extra))
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)
    oracle = next((t for t in table if t["n"] and "reward=oracle" in t["setting"].split()), None)
    best = max((t["mean"] for t in table if t["n"]), default=math.nan)
    ref, ref_name = (oracle["mean"], "oracle") if oracle else (best, "best")

    lines = [f"# {title}", "", f"Generated by `memrl report {' '.join(map(str, dirs))}`.", ""]
    lines.append(
        "Final evaluation of each setting, mean +- std over seeds (accuracies and pass@k in %; pass@1 is the "
        "mean over the n samples, distinct@n the distinct answers among them)."
    )
    lines.append("")
    head = ["setting", "seeds", "greedy", f"% of {ref_name}", *extra, "labels consumed"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in table:
        if not t["n"]:
            lines.append(f"| {t['setting']} | 0 | no finished job |" + " |" * (len(head) - 3))
            continue
        cells = [
            t["setting"],
            str(t["n"]),
            _pct(t["mean"], t["std"]),
            f"{100 * t['mean'] / ref:.1f}" if ref else "n/a",
            *[_pct(*t["extra"][k], scale=1.0 if k.startswith("distinct@") else 100.0) for k in extra],
            ", ".join(str(x) for x in sorted(set(t["labels_consumed"]))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Commands (each regenerates its row):", ""]
    for setting, jobs in by_setting.items():
        lines.append(f"- {setting}: `{_command(jobs[0]['overrides'], [j['seed'] for j in jobs])}`")
    missing = [m for t in table for m in t["missing"]]
    if missing:
        lines += ["", "Unfinished or failed jobs (not averaged): " + ", ".join(missing)]

    figures: list[tuple[str, Path | None]] = []
    curves = {
        t["setting"]: {k: v[0] for k, v in t["extra"].items() if k.startswith("pass@") and not math.isnan(v[0])}
        for t in table
        if t["n"]
    }
    if any(curves.values()):
        label = short_labels(list(curves))
        results = {
            label[s]: {"pass@k": {int(k.split("@")[1]): v for k, v in c.items()}} for s, c in curves.items() if c
        }
        figures.append(("pass@k of the final policy", plot_pass_at_k(results, out / "pass_at_k.png", "pass@k")))
    ratio_points: dict[str, list[tuple[float, float, float]]] = {}
    for t in table:
        if not t["n"]:
            continue
        cfg = _config(by_setting[t["setting"]][0]["dir"]).get("reward") or {}
        if cfg.get("name") and cfg.get("name") != "oracle":
            ratio_points.setdefault(str(cfg["name"]), []).append(
                (float(cfg.get("label_ratio", 1.0)), t["mean"], t["std"])
            )
    if any(len({p[0] for p in pts}) > 1 for pts in ratio_points.values()):
        figures.append(
            (
                "final accuracy against the label ratio",
                plot_label_ratio(ratio_points, out / "label_ratio.png", oracle and oracle["mean"]),
            )
        )
    label = short_labels(list(by_setting))
    runs = {label[s]: [_metrics(j["dir"]) for j in jobs if j["summary"]] for s, jobs in by_setting.items()}
    figures.append(
        ("training", plot_step_curves(runs, TRAINING_KEYS, out / "training.png", "training (mean over seeds)"))
    )
    figures.append(
        (
            "reward-prediction quality",
            plot_step_curves(runs, QUALITY_KEYS, out / "reward_quality.png", "reward prediction"),
        )
    )
    figures.append(
        ("diversity", plot_step_curves(runs, DIVERSITY_KEYS, out / "diversity.png", "diversity (MEDS memory)"))
    )
    drawn = [(name, path) for name, path in figures if path is not None]
    if drawn:
        lines += ["", "## Figures", ""]
        lines += [f"![{name}]({path.name})" for name, path in drawn]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", text)
    atomic_write_json(out / "report.json", {"sources": [str(d) for d in dirs], "table": table})
    return out / "report.md"
