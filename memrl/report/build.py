"""`memrl report SWEEP_DIR...`: finished jobs of one or more sweeps as a markdown report with plots.

Jobs are grouped by their overrides except the seed (`memrl.sweep_summary`); each group is one row with
the mean +- sample std over its finished seeds of the final evaluation: greedy accuracy, pass@1 (the mean
over the n samples) and pass@k, distinct answers among the n samples, the labels the run consumed, and
"% of oracle" when the sweep has a `reward=oracle` row (else % of the best row). Failed or unfinished
jobs are listed, not averaged. Each row carries the command that regenerates it.

Figures, when their data exist: pass@k curves; final accuracy against the label ratio (when the jobs
differ in it); reward-prediction quality over training (MemReward's metrics_only/reward_* and
reward/gnn_group_auc); diversity and shaping over training (MEDS' meds/*, meds/adv_shift).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from memrl.errors import UserError
from memrl.eval.plots import plot_pass_at_k
from memrl.report.claims import SUMMARY_BEGIN, SUMMARY_END, claims_section, quote_summary
from memrl.report.plots import plot_label_ratio, plot_step_curves
from memrl.sweep_summary import IGNORED, collect_jobs, reference, summarise, to_markdown
from memrl.utils.io import atomic_write_json, atomic_write_text, read_jsonl_tolerant

QUALITY_KEYS = [
    ("metrics_only/reward_f1", "reward F1 on unlabelled rollouts"),
    ("metrics_only/reward_fpr", "reward false-positive rate"),
    ("metrics_only/acc_unlabelled", "true accuracy on unlabelled queries"),
    ("reward/gnn_group_auc", "reward model's AUC within groups"),
]
DIVERSITY_KEYS = [
    ("meds/distinct_answers", "distinct answers per group"),
    ("meds/answer_novelty", "answers new for their prompt"),
    ("meds/top1_eigen_ratio", "top-1 eigenvalue ratio of the features"),
    ("meds/penalised_frac", "share of rollouts penalised"),
    ("meds/adv_shift", "advantage shift of shaped groups"),
]
TRAINING_KEYS = [
    ("reward/acc_generated", "training accuracy (generated)"),
    ("actor/entropy", "policy entropy"),
]


def _metrics(job_dir: str) -> list[dict[str, float]]:
    return read_jsonl_tolerant(Path(job_dir) / "train" / "metrics.jsonl")


def _config(job_dir: str) -> dict[str, Any]:
    path = Path(job_dir) / ".hydra" / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _command(overrides: Sequence[str], seeds: Sequence[str]) -> str:
    kept = [o for o in overrides if not o.startswith(IGNORED)]
    seed = ",".join(sorted(set(seeds), key=lambda s: (len(s), s)))
    return "memrl train -m " + " ".join([*kept, f"seed={seed}"])


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


def curve_name(reward: dict[str, Any]) -> str:
    """The label-ratio plot's line of a job: its reward mode, with the variant when it is not the paper's
    (another online reward model, a growing memory), so that ablations never join the main curve."""
    name = str(reward.get("name"))
    mr = reward.get("memreward") or {}
    if name == "memreward":
        if mr.get("reward_model", "gnn") != "gnn":
            name += f" ({mr['reward_model']})"
        if mr.get("grow_memory"):
            name += " (growing memory)"
    return name


def initial_line(run_dir: str | Path) -> str:
    """One line on the policy before training: the newest `eval/results_*.json` of a `memrl eval` run.

    Raises:
        UserError: no results file in run_dir/eval.
    """
    files = sorted((Path(run_dir) / "eval").glob("results_*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise UserError(f"--initial {run_dir}: no eval/results_*.json; give the run directory of a `memrl eval`")
    results = json.loads(files[-1].read_text())
    overall = results["overall"]
    parts = [f"greedy {100 * overall['greedy_acc']:.1f}"] if overall.get("greedy_acc") is not None else []
    parts += [f"pass@{k} {100 * v:.1f}" for k, v in (overall.get("pass@k") or {}).items()]
    parts += [f"{k} {v:.1f}" for k, v in overall.items() if k.startswith("distinct@")]
    saved = Path(run_dir) / ".hydra" / "overrides.yaml"
    overrides = (yaml.safe_load(saved.read_text()) or []) if saved.is_file() else []
    kept = [o for o in overrides if not o.startswith(IGNORED)]
    benches = "".join(f" {b}" for b in results.get("benchmarks") or {})
    return (
        f"The policy before training, on {overall.get('n_problems')}{benches} test problems: {', '.join(parts)} "
        f"(`{' '.join(['memrl eval', *kept])}`, {files[-1]})."
    )


def build_report(
    dirs: Sequence[str | Path],
    out_dir: str | Path,
    title: str = "memrl report",
    sections: Sequence[tuple[str, Sequence[str | Path]]] = (),
    markdown: str | Path | None = None,
    initial: str | Path | Sequence[str | Path] | None = None,
    claims: bool = False,
) -> Path:
    """Write a markdown report (+ report.json and the figures in out_dir); returns the markdown's path.

    Args:
        dirs: sweep folders pooled into one untitled table (may be empty when `sections` are given).
        out_dir: folder for report.json and the figures (and report.md unless `markdown` is given).
        sections: (title, sweep folders) pairs, one titled table with its own figures each, in order.
        markdown: where the markdown goes (default out_dir/report.md); figure links are relative to it.
        initial: `memrl eval` run directories of the policies before training (one per task), reported above the
            tables.
        claims: judge the papers' claims on the toy sweeps (`memrl.report.claims`) in a section after the tables.

    Raises:
        UserError: no folder given, a missing folder, or one without job folders.
    """
    parts = ([("", list(dirs))] if dirs else []) + [(t, list(d)) for t, d in sections]
    if not parts:
        raise UserError("give at least one sweep folder (SWEEP_DIR or --table TITLE=DIR[,DIR...])")
    missing_dirs = [str(d) for _, ds in parts for d in ds if not Path(d).is_dir()]
    if missing_dirs:
        raise UserError(f"no such sweep folder: {', '.join(missing_dirs)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md_path = Path(markdown) if markdown is not None else out / "report.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["memrl report", *map(str, dirs)])
    command += "".join(f' --table "{t}={",".join(map(str, d))}"' for t, d in sections)
    initials = [initial] if isinstance(initial, (str, Path)) else list(initial or [])
    command += "".join(f" --initial {i}" for i in initials)
    command += " --claims" if claims else ""
    lines = [f"# {title}", "", f"Generated by `{command.strip()}`.", ""]
    for i in initials:
        lines += [initial_line(i), ""]
    lines.append(
        "Final evaluation of each setting over its seeds (accuracies and pass@k in %; pass@1 is the mean over "
        "the n samples, distinct@n the distinct answers among them)."
    )
    tables = []
    for i, (section_title, section_dirs) in enumerate(parts):
        prefix = "" if len(parts) == 1 else f"{i + 1}_"
        section_lines, table = _section(section_dirs, out, prefix, md_path.parent)
        if section_title:
            lines += ["", f"## {section_title}", ""]
            lines.append(f"Sweeps: {', '.join(f'`{d}`' for d in section_dirs)}.")
        lines += section_lines
        tables.append({"title": section_title, "sources": [str(d) for d in section_dirs], "table": table})
    if claims:
        # a sweep folder may feed several tables; each job counts once
        jobs = {j["dir"]: j for _, ds in parts for d in ds for j in collect_jobs(d)}
        lines += claims_section(list(jobs.values()))
    text = "\n".join(lines) + "\n"
    atomic_write_text(md_path, text)
    atomic_write_json(out / "report.json", {"sections": tables})
    return md_path


def _section(dirs: Sequence[str | Path], out: Path, prefix: str, md_dir: Path) -> tuple[list[str], list[dict]]:
    """One table (pooled over `dirs`) with its commands and figures (out/<prefix><figure>.png)."""
    rows = [row for d in dirs for row in collect_jobs(d)]
    if not rows:
        raise UserError(
            f"no job folders (with .hydra/overrides.yaml) in {', '.join(map(str, dirs))}: give the folder of a "
            "multirun (outputs/<task>/multiruns/<date>)"
        )
    extra = report_columns(rows)
    table = summarise(rows, "greedy_acc", tuple(extra))
    ref_name, ref = reference(table)
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)

    lines = ["", to_markdown(table).rstrip("\n"), "", "Commands (each regenerates its row):", ""]
    for setting, jobs in by_setting.items():
        lines.append(f"- {setting}: `{_command(jobs[0]['overrides'], [j['seed'] for j in jobs])}`")

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
        figures.append(
            ("pass@k of the final policy", plot_pass_at_k(results, out / f"{prefix}pass_at_k.png", "pass@k"))
        )
    ratio_points: dict[str, list[tuple[float, float, float]]] = {}
    for t in table:
        if not t["n"]:
            continue
        cfg = _config(by_setting[t["setting"]][0]["dir"]).get("reward") or {}
        if cfg.get("name") and cfg.get("name") != "oracle":
            ratio_points.setdefault(curve_name(cfg), []).append(
                (float(cfg.get("label_ratio", 1.0)), t["mean"], t["std"])
            )
    if any(len({p[0] for p in pts}) > 1 for pts in ratio_points.values()):
        figures.append(
            (
                "final accuracy against the label ratio",
                plot_label_ratio(ratio_points, out / f"{prefix}label_ratio.png", ref if ref_name == "oracle" else None),
            )
        )
    label = short_labels(list(by_setting))
    runs = {label[s]: [_metrics(j["dir"]) for j in jobs if j["summary"]] for s, jobs in by_setting.items()}
    figures.append(
        (
            "training",
            plot_step_curves(runs, TRAINING_KEYS, out / f"{prefix}training.png", "training (mean over seeds)"),
        )
    )
    figures.append(
        (
            "reward-prediction quality",
            plot_step_curves(runs, QUALITY_KEYS, out / f"{prefix}reward_quality.png", "reward prediction"),
        )
    )
    figures.append(
        (
            "diversity",
            plot_step_curves(runs, DIVERSITY_KEYS, out / f"{prefix}diversity.png", "diversity (MEDS memory)"),
        )
    )
    drawn = [(name, path) for name, path in figures if path is not None]
    if drawn:
        lines += ["", "Figures:", ""]
        lines += [f"![{name}]({Path(os.path.relpath(path, md_dir)).as_posix()})" for name, path in drawn]
    return lines, table


def quote_readme_summary(readme: Path, results_md: Path) -> None:
    """Replace the summary block of `readme` (between `memrl.report.claims`' markers) with the one `results_md`
    was just written with, so the README quotes docs/results.md instead of retyping it.

    Raises:
        UserError: either file lacks the markers (the report needs --claims; the README needs the block once).
    """
    try:
        text = quote_summary(readme.read_text(), results_md.read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot quote the results summary of {results_md} into {readme}: {e} (both need the markers "
            f"{SUMMARY_BEGIN!r} ... {SUMMARY_END!r}; the report needs --claims)"
        ) from None
    atomic_write_text(readme, text)
