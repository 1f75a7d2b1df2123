"""MemReward's warm-up stages: `memrl rollout`, `memrl graph`, `memrl gnn` (and `memrl train` with reward=memreward).

Runbook:
    memrl rollout reward=memreward                       # memory/: rollouts of the initial policy, graded
    memrl graph --run outputs/rollout/<run>              # graph/: embeddings, answer features, the graph
    memrl gnn --run outputs/rollout/<run>                # gnn/: the reward GNN, report.json (and baselines)
    memrl train reward=memreward reward.label_ratio=0.2  # runs whichever of the three is missing, then RL

Each stage writes its artifacts into the run directory and is skipped when they exist (a killed warm-up
resumes at the first incomplete stage). The label split and the memory's queries follow the train config,
so the three stages and `memrl train` agree on them.
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

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from memrl.data.loaders import load_problems
from memrl.errors import UserError
from memrl.grading.build import build_grader
from memrl.memreward.artifacts import (
    GNN_DONE,
    GRAPH_DONE,
    ROLE_FILES,
    WARMUP_PARTS,
    build_encoder,
    fit_settings,
    gnn_dir,
    graph_dir,
    load_graph_inputs,
    make_model,
    memory_dir,
    model_spec,
)
from memrl.memreward.embed import build_inputs, group_labels, memory_groups
from memrl.memreward.graph import MemoryGraph
from memrl.memreward.memory import DONE, ExperienceMemory
from memrl.memreward.metrics import binary_metrics
from memrl.memreward.training import fit, predict_proba, supervised_graph
from memrl.memreward.warmup import build_memory, plan_memory
from memrl.policy.load import load_policy
from memrl.rollout.build import build_engine
from memrl.rollout.records import SamplingParams
from memrl.run_dir import RunDir
from memrl.stages.common import load_training_data, prompt_builder
from memrl.utils.io import atomic_torch_save, atomic_write_json
from memrl.utils.progress import progress_bar

log = logging.getLogger(__name__)


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def warmup_params(cfg: DictConfig) -> Any:
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


def run_rollout(cfg: DictConfig, run_dir: RunDir, policy: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """Fill `memory/` unless it is complete; returns its summary. With `reward.memreward.warmup_from`, another
    run's whole warm-up (memory/, graph/, gnn/) is copied in first, so this and the later stages are skipped.

    Args:
        policy: (engine, prompt_fn, grader) when the caller (memrl train) already has them; else they are
            built from the config.
    """

    if cfg.reward.memreward.get("warmup_from"):
        reuse_warmup(str(cfg.reward.memreward.warmup_from), run_dir)
    folder = memory_dir(run_dir)
    if ExperienceMemory.exists(folder):
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
        "labels": {
            "labelled_ids": sorted(p.id for p in plan.train + ([] if plan.val_labels_extra else plan.val)),
            "extra_validation_ids": sorted(p.id for p in plan.val) if plan.val_labels_extra else [],
        },
    }
    memory.save(folder, info)
    summary = memory.summary()
    log.info("experience memory: %s (%.1fs)", summary, info["seconds"])
    return {"summary": summary, **info}


def _memory_val_split(cfg: DictConfig) -> list[Any]:

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
    model, tokenizer, _ = load_policy(cfg.model, cfg.paths.cache_dir)
    prompt_fn, _ = prompt_builder(cfg, tokenizer)
    with build_grader(cfg.grading) as grader:
        yield build_engine(cfg.rollout, model, tokenizer), prompt_fn, grader


# ---------------------------------------------------------------------------------------------------
# memrl graph: embeddings and answer features of the memory (graph/)


def run_graph(cfg: DictConfig, run_dir: RunDir, encoder: Any = None) -> dict[str, Any]:
    """Embed the memory into `graph/` unless it is complete: one GraphInputs per role, and the label
    tensors of the validation and report rollouts (kept apart from the inputs: only metrics read them)."""

    folder = graph_dir(run_dir)
    if (folder / GRAPH_DONE).is_file():
        log.info("memory graph inputs exist: %s (skipped)", folder)
        return json.loads((folder / GRAPH_DONE).read_text())
    memory = ExperienceMemory.load(memory_dir(run_dir))
    mr = cfg.reward.memreward
    t0 = time.time()
    encoder = encoder or build_encoder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    inputs = {}
    for role in ("train", "val", "report"):
        groups = memory_groups(memory, role, with_labels=True)
        inputs[role] = build_inputs(encoder, groups, labelled=(role == "train"))
        if role != "train":
            labels[role] = group_labels(groups)
        atomic_torch_save(inputs[role].to_dict(), folder / ROLE_FILES[role])
    atomic_torch_save(labels, folder / "labels.pt")
    mg = MemoryGraph(inputs["train"], int(mr.k), str(mr.direction), int(mr.think_k))
    graph, _ = mg.attach(inputs["val"])
    info = {
        "seconds": round(time.time() - t0, 1),
        "encoder": encoder.model_path,
        "texts_embedded": len(encoder),
        "nodes": {t: int(graph[t].num_nodes) for t in graph.node_types},
        "edges": {"__".join(et): int(graph[et].edge_index.shape[1]) for et in graph.edge_types},
        "queries": {role: inputs[role].num_queries for role in inputs},
        "rollouts": {role: inputs[role].num_rollouts for role in inputs},
        "k": int(mr.k),
        "direction": str(mr.direction),
        "think_k": int(mr.think_k),
        "torch_threads": torch.get_num_threads(),
    }
    atomic_write_json(folder / GRAPH_DONE, info)
    log.info(
        "memory graph (train memory + validation queries): %s nodes, %s edges (%.1fs)",
        info["nodes"],
        info["edges"],
        info["seconds"],
    )
    return info


# ---------------------------------------------------------------------------------------------------
# memrl gnn: train and select the reward GNN, compare with the baselines (gnn/)


def run_gnn(cfg: DictConfig, run_dir: RunDir) -> dict[str, Any]:
    """Train the reward GNN (and the baselines) unless `gnn/report.json` exists; returns the report.

    The training graph is the labelled memory with the validation queries attached as unlabelled queries,
    exactly as online queries are; the report queries are attached the same way to the memory alone, so
    their predictions are the ones training would give them.
    """

    folder = gnn_dir(run_dir)
    if (folder / GNN_DONE).is_file():
        log.info("reward GNN exists: %s (skipped)", folder)
        return json.loads((folder / GNN_DONE).read_text())
    inputs, labels = load_graph_inputs(run_dir)
    mr = cfg.reward.memreward
    mg = MemoryGraph(inputs["train"], int(mr.k), str(mr.direction), int(mr.think_k))
    train_graph, train_mask, val_mask = supervised_graph(mg, inputs["val"], labels["val"])
    has_report = inputs["report"].num_rollouts > 0
    report_graph, report_idx = mg.attach(inputs["report"]) if has_report else (None, None)
    settings = fit_settings(cfg)
    folder.mkdir(parents=True, exist_ok=True)

    kinds = ["gnn"] + (["mlp", "homogeneous", "no_think"] if mr.baselines else [])
    if str(mr.reward_model) not in kinds:  # the online reward model of an ablation, trained even without baselines
        kinds.append(str(mr.reward_model))
    results: dict[str, Any] = {}
    threshold = float(mr.threshold)
    # the group-majority-vote answer: "correct" when a rollout's answer is its group's majority (no label read)
    results["majority_vote"] = {
        "val": binary_metrics(inputs["val"].answer_feat[:, 2], labels["val"], threshold),
        "report": binary_metrics(inputs["report"].answer_feat[:, 2], labels["report"], threshold)
        if has_report
        else None,
    }
    for kind in kinds:
        spec = model_spec(cfg, kind, inputs["train"])
        t0 = time.time()
        result = _fit_with_bar(
            cfg, kind, lambda spec=spec: make_model(spec), train_graph, train_mask, val_mask, settings
        )
        seconds = time.time() - t0
        train_prob = predict_proba(result.model, train_graph)
        row = {
            "train": binary_metrics(train_prob[train_mask], train_graph["answer"].y[train_mask], threshold),
            "val": binary_metrics(train_prob[val_mask], labels["val"], threshold),
            "report": None,
            "best_epoch": result.best_epoch,
            "restart": result.restart_index,
            "restarts": result.restarts,
            "fit_seconds": round(seconds, 1),
            "parameters": sum(p.numel() for p in result.model.parameters()),
        }
        if has_report:
            prob = predict_proba(result.model, report_graph)[report_idx]
            row["report"] = binary_metrics(prob, labels["report"], threshold)
        results[kind] = row
        atomic_torch_save({"spec": spec, "state_dict": result.model.state_dict()}, folder / f"{kind}.pt")
        log.info(
            "%s: best epoch %d, val %s, report %s (%.1fs)", kind, result.best_epoch, row["val"], row["report"], seconds
        )
    report = {
        "threshold": threshold,
        "report_on": "report" if has_report else "val",
        "report_queries": inputs["report"].num_queries,
        "val_queries": inputs["val"].num_queries,
        "train_queries": inputs["train"].num_queries,
        "report_base_rate": float(labels["report"].mean()) if has_report else None,
        "models": results,
        "note": "report = unlabelled training queries, ground truth read for these metrics only; "
        "val = the GNN's validation queries (early stopping and selection, so optimistic)",
    }
    atomic_write_json(folder / GNN_DONE, report)
    print_gnn_table(report)
    return report


def _fit_with_bar(
    cfg: DictConfig, kind: str, make: Any, graph: Any, train_mask: Any, val_mask: Any, settings: Any
) -> Any:
    """`training.fit` with a progress bar over restarts x max_epochs (early-stopped epochs count as done)."""
    if not cfg.trainer.progress:
        return fit(make, graph, train_mask, val_mask, settings)

    bar = progress_bar(kind)
    bar.start()
    task = bar.add_task(f"fit {kind}", total=settings.restarts * settings.max_epochs, info="")
    try:
        return fit(make, graph, train_mask, val_mask, settings, progress=lambda k: bar.advance(task, k))
    finally:
        bar.stop()


def print_gnn_table(report: dict[str, Any]) -> None:
    """The reward-prediction table of `gnn/report.json` on the held-out (report) queries."""
    split = report["report_on"]
    n_q = report["report_queries"] if split == "report" else report["val_queries"]
    table = Table(
        title=f"reward prediction on {n_q} {'held-out unlabelled' if split == 'report' else 'validation'} "
        f"queries (threshold {report['threshold']})"
    )
    cols = ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr")
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in report["models"].items():
        m = row.get(split) or {}
        table.add_row(name, *("-" if m.get(c) is None else f"{m[c]:.3f}" for c in cols))
    Console().print(table)


# ---------------------------------------------------------------------------------------------------
# memrl train reward=memreward: the warm-up stages, then the online component


def reuse_warmup(source: str | Path, run_dir: RunDir) -> None:
    """Copy another run's finished warm-up (memory/, graph/, gnn/) into this run directory, where the
    warm-up stages then find it done; parts this run already has are kept.

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
        if not target.exists():
            # into a temporary name, then renamed: a copy killed half-way is never taken for a finished part
            tmp = target.with_name(f".{part}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src / part, tmp)
            tmp.rename(target)
    log.info("warm-up reused from %s", src)


def run_warmup(cfg: DictConfig, run_dir: RunDir, policy: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """`memrl rollout`, `memrl graph` and `memrl gnn` in turn, each skipped when its artifacts exist."""
    memory = run_rollout(cfg, run_dir, policy)
    encoder = build_encoder(cfg)
    graph = run_graph(cfg, run_dir, encoder)
    report = run_gnn(cfg, run_dir)
    return {"memory": memory, "graph": graph, "gnn": report, "encoder": encoder}
