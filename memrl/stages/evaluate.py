"""`memrl eval`: evaluate a model on one or more benchmarks and write the results into the run directory.

Runbook:
    memrl eval                                  # tiny model, synthetic test split, greedy + pass@k (n=8)
    memrl eval data=gsm8k eval.limit=20         # real GSM8K test problems
    memrl eval model=hf model.name_or_path=DIR data=math_suite eval.n=16 rollout.max_new_tokens=1024
    memrl eval -m data=synthetic,gsm8k eval.limit=10    # a Hydra sweep: one job per benchmark

Writes `eval/results_<ts>.json` (per-benchmark and sample-weighted metrics, model, settings),
`eval/samples_<bench>_<ts>.jsonl` (one record per completion) and `eval/pass_at_k_<ts>.png`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from memrl.data.loaders import load_eval_sets
from memrl.data.templates import resolve_style
from memrl.errors import UserError
from memrl.eval.plots import plot_pass_at_k
from memrl.eval.runner import EvalSettings, evaluate_problems, weighted_average
from memrl.grading.build import build_grader
from memrl.policy.load import load_policy
from memrl.rollout.build import build_engine
from memrl.run_dir import RunDir
from memrl.stages.common import seed_everything
from memrl.tracking import build_tracker, flatten_eval_metrics
from memrl.utils.io import atomic_write_json, atomic_write_jsonl
from memrl.utils.progress import progress_bar

log = logging.getLogger(__name__)


def run(cfg: DictConfig, run_dir: RunDir) -> dict[str, Any]:
    """Evaluate `cfg.model` on `cfg.data.eval_sets`; returns the results dict written to results_<ts>.json."""
    seed_everything(int(cfg.seed))
    if not cfg.data.eval_sets:
        raise UserError("data.eval_sets is empty: choose a benchmark, e.g. data=gsm8k")
    sets = load_eval_sets(cfg.data.eval_sets, Path(cfg.paths.data_dir), cfg.data.synthetic, limit=cfg.eval.limit)
    model, tokenizer, model_path = load_policy(cfg.model, cfg.paths.cache_dir, cfg.data.synthetic)
    return evaluate_model(cfg, run_dir, model, tokenizer, model_path, sets)


def evaluate_model(
    cfg: DictConfig,
    run_dir: RunDir,
    model: Any,
    tokenizer: Any,
    model_path: str,
    sets: dict[str, list[Any]],
    tag: str = "",
    tracker: Any = None,
    print_table: bool = True,
    engine: Any = None,
    dist_ctx: Any = None,
) -> dict[str, Any]:
    """Evaluate a loaded model on loaded benchmarks; writes eval/results_<tag><ts>.json, samples and a plot.

    `memrl train` calls this for the policy before and after training (tags `initial_` and `final_`), with its
    own tracker (None: the `logger` config's tracker for this evaluation alone) and its rollout engine (None:
    one is built from `cfg.rollout`; a vLLM engine holds its own copy of the weights, so one per run). With
    `dist_ctx` (a distributed run) the ranks split the problems (`evaluate_problems`) and rank 0 alone writes
    the files, those of a 1-rank evaluation; every rank returns the results.
    """
    main = dist_ctx is None or dist_ctx.is_main
    t0 = time.time()
    style = resolve_style(cfg.model.prompt_style, tokenizer)
    settings = EvalSettings(cfg, style)
    engine = engine if engine is not None else build_engine(cfg.rollout, model, tokenizer)
    ts = tag + time.strftime("%Y%m%d-%H%M%S")
    eval_dir = run_dir.path("eval")
    per_bench: dict[str, dict[str, Any]] = {}
    passes = int(settings.greedy) + int(settings.n > 0)
    total = sum(len(p) for p in sets.values()) * passes

    with (
        _progress(total) as advance,
        build_grader(cfg.grading) as grader,
    ):
        for name, problems in sets.items():
            tb = time.time()
            metrics, samples = evaluate_problems(engine, tokenizer, problems, settings, grader, advance, dist_ctx)
            metrics["seconds"] = round(time.time() - tb, 2)
            per_bench[name] = metrics

            if main:
                atomic_write_jsonl(eval_dir / f"samples_{name}_{ts}.jsonl", samples)
            log.info("%s: %s", name, _summary(metrics))

    results = {
        "model": model_path,
        "timestamp": ts,
        "settings": settings.as_dict(),
        "benchmarks": per_bench,
        "overall": weighted_average(per_bench),
        "seconds": round(time.time() - t0, 2),
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }
    if not main:
        return results

    atomic_write_json(eval_dir / f"results_{ts}.json", results)
    if cfg.eval.plot and settings.n > 0:
        curves = dict(per_bench)
        if len(per_bench) > 1:
            curves["overall (weighted)"] = results["overall"]
        plot_pass_at_k(curves, eval_dir / f"pass_at_k_{ts}.png", title=f"pass@k: {Path(model_path).name}")

    if tracker is None:
        own = build_tracker(cfg.logger, str(run_dir.root), results["config"], name=f"eval-{ts}")
        own.log(flatten_eval_metrics(results))
        own.finish()
    else:
        tracker.log({f"{tag or ''}{k}": v for k, v in flatten_eval_metrics(results).items()})
    if print_table:
        _print_table(results, settings)
    log.info("results: %s", eval_dir / f"results_{ts}.json")
    return results


def _summary(m: dict[str, Any]) -> str:
    parts = []
    if "greedy_acc" in m:
        parts.append(f"greedy {100 * m['greedy_acc']:.1f}%")
    for k, v in (m.get("pass@k") or {}).items():
        parts.append(f"pass@{k} {100 * v:.1f}%")
    return ", ".join(parts)


class _progress:
    """The eval progress bar over problems x passes; yields an `advance(n)` callback."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = progress_bar("eval")

    def __enter__(self):
        self.bar.__enter__()
        task = self.bar.add_task("eval", total=self.total, info="")
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)


def _print_table(results: dict[str, Any], settings: Any) -> None:
    n = settings.n
    ks = list(settings.ks) if n > 0 else []
    table = Table(title=f"memrl eval: {results['model']}")
    table.add_column("benchmark")
    table.add_column("problems", justify="right")
    if settings.greedy:
        table.add_column("greedy", justify="right")
    if n > 0:
        table.add_column(f"mean@{n}", justify="right")
        for k in ks:
            table.add_column(f"pass@{k}", justify="right")
    rows = list(results["benchmarks"].items())
    if len(rows) > 1:
        rows.append(("overall (sample-weighted)", results["overall"]))
    for name, m in rows:
        cells = [name, str(m["n_problems"])]
        if settings.greedy:
            cells.append(_pct(m.get("greedy_acc")))
        if n > 0:
            cells.append(_pct(m.get(f"mean@{n}")))
            cells += [_pct((m.get("pass@k") or {}).get(k)) for k in ks]
        table.add_row(*cells)
    Console().print(table)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"
