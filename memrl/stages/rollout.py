"""`memrl rollout`: the first of MemReward's warm-up stages, the experience memory (memory/).

Rollouts of the initial policy on the memory's queries (the labelled training queries, the GNN's validation
queries and the report queries), graded. The next stages are `memrl.stages.graph` and `memrl.stages.gnn`;
`memrl.stages.warmup` runs the three in turn. The memory itself is `memrl.memreward.memory`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from memrl.data.loaders import load_problems
from memrl.data.problem import Problem
from memrl.errors import UserError
from memrl.grading.build import build_grader
from memrl.memreward.artifacts import GNN_DONE, GRAPH_DONE, WARMUP_PARTS, memory_dir
from memrl.memreward.fill import build_memory, plan_memory
from memrl.memreward.memory import DONE
from memrl.policy.load import load_policy
from memrl.rollout.build import build_engine
from memrl.rollout.records import SamplingParams
from memrl.run_dir import RunDir, config_record, reusable
from memrl.stages.common import load_training_data, prompt_builder
from memrl.utils.progress import progress_bar

log = logging.getLogger(__name__)


def run_rollout(cfg: DictConfig, run_dir: RunDir, policy: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """Fill `memory/` unless it is complete; returns its summary. With `reward.memreward.warmup_from`, another
    run's whole warm-up (memory/, graph/, gnn/) is copied in first, so this and the later stages are skipped.

    Args:
        policy: (engine, prompt_fn, grader) when the caller (memrl train) already has them; else they are
            built from the config.
    """
    if cfg.reward.memreward.get("warmup_from"):
        reuse_warmup(str(cfg.reward.memreward.warmup_from), run_dir, cfg)
    folder = memory_dir(run_dir)
    if reusable(run_dir, cfg, "memory"):  # refused when built with another config (docs/run-directory.md)
        log.info("experience memory exists: %s (skipped)", folder)
        return json.loads((folder / DONE).read_text())
    mr = cfg.reward.memreward
    train_problems, _, ground_truth = load_training_data(cfg)
    val_split = _memory_val_split(cfg)
    plan = plan_memory(
        train_problems,
        ground_truth,
        val_split,
        str(mr.val_source),
        float(mr.val_fraction),
        int(mr.report_queries),
        int(cfg.reward.label_seed),
    )
    params = warmup_params(cfg)
    n_queries = len(plan.train) + len(plan.val) + len(plan.report)
    log.info(
        "warm-up rollouts: %d train + %d val + %d report queries x %d (temperature %g, top_p %g, %d tokens)",
        len(plan.train),
        len(plan.val),
        len(plan.report),
        params.n,
        params.temperature,
        params.top_p,
        params.max_new_tokens,
    )
    t0 = time.time()
    with _policy_or(cfg, policy) as (engine, prompt_fn, grader):
        bar = progress_bar("rollout") if cfg.trainer.progress else None
        if bar is not None:
            bar.start()
            task = bar.add_task("warm-up rollouts", total=n_queries, info="")
        try:
            memory = build_memory(
                plan,
                engine,
                prompt_fn,
                params,
                grader,
                ground_truth,
                progress=None if bar is None else (lambda k: bar.advance(task, k)),
            )
        finally:
            if bar is not None:
                bar.stop()
    info = {
        "seconds": round(time.time() - t0, 1),
        "sampling": {
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_new_tokens": params.max_new_tokens,
        },
        "val_source": str(mr.val_source),
        "built_with": config_record(cfg, "memory"),
        "labels": {
            "labelled_ids": sorted(p.id for p in plan.train + ([] if plan.val_labels_extra else plan.val)),
            "extra_validation_ids": sorted(p.id for p in plan.val) if plan.val_labels_extra else [],
        },
    }
    memory.save(folder, info)
    summary = memory.summary()
    log.info("experience memory: %s (%.1fs)", summary, info["seconds"])
    return {"summary": summary, **info}


def warmup_params(cfg: DictConfig) -> SamplingParams:
    """Sampling parameters of the warm-up rollouts (reward.memreward.warmup, falling back on rollout.*)."""
    w = cfg.reward.memreward.warmup
    return SamplingParams(
        n=int(w.n),
        temperature=float(w.temperature),
        top_p=float(w.top_p),
        top_k=int(cfg.rollout.top_k),
        max_new_tokens=int(w.max_new_tokens or cfg.rollout.max_new_tokens),
        stop=tuple(cfg.rollout.stop),
        seed=int(w.seed),
    )


def _memory_val_split(cfg: DictConfig) -> list[Problem]:
    mr = cfg.reward.memreward
    if str(mr.val_source) != "split" or cfg.data.val_set is None:
        return []
    problems = load_problems(cfg.data.val_set, Path(cfg.paths.data_dir), cfg.data.synthetic)
    return problems if mr.val_limit is None else problems[: int(mr.val_limit)]


@contextlib.contextmanager
def _policy_or(cfg: DictConfig, given: tuple[Any, Any, Any] | None) -> Iterator[tuple[Any, Any, Any]]:
    """The caller's (engine, prompt_fn, grader), or the policy loaded and wrapped for this stage alone."""
    if given is not None:
        yield given
        return
    model, tokenizer, _ = load_policy(cfg.model, cfg.paths.cache_dir, cfg.data.synthetic)
    prompt_fn, _ = prompt_builder(cfg, tokenizer)
    with build_grader(cfg.grading) as grader:
        yield build_engine(cfg.rollout, model, tokenizer), prompt_fn, grader


def reuse_warmup(source: str | Path, run_dir: RunDir, cfg: DictConfig) -> None:
    """Copy another run's finished warm-up (memory/, graph/, gnn/) into this run directory, where the
    warm-up stages then find it done; parts this run already has are kept when they carry the source's config
    records (else refused, or replaced with trainer.resume=disable).

    Raises:
        UserError: the source has no finished warm-up.
    """
    src = Path(source).expanduser()
    done = {"memory": src / "memory" / DONE, "graph": src / "graph" / GRAPH_DONE, "gnn": src / "gnn" / GNN_DONE}
    missing = [str(f) for f in done.values() if not f.is_file()]
    if missing:
        raise UserError(
            f"reward.memreward.warmup_from={source}: no finished warm-up there (missing {', '.join(missing)}); "
            "give the run directory of a `memrl gnn` or `memrl train reward=memreward` run"
        )
    for part in WARMUP_PARTS:
        target = Path(run_dir.root) / part
        if not reusable(run_dir, cfg, part):
            # into a temporary name, then renamed: a copy killed half-way is never taken for a finished part
            tmp = target.with_name(f".{part}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src / part, tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    log.info("warm-up reused from %s", src)
