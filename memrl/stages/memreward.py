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
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from memrl.errors import UserError
from memrl.run_dir import RunDir, config_record, reusable

log = logging.getLogger(__name__)


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def memory_dir(run_dir: RunDir) -> Path:
    return Path(run_dir.root) / "memory"


def warmup_params(cfg: DictConfig) -> Any:
    """Sampling parameters of the warm-up rollouts (reward.memreward.warmup, falling back on rollout.*)."""
    from memrl.rollout.records import SamplingParams

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
    import time

    from memrl.memreward.memory import DONE
    from memrl.memreward.warmup import build_memory, plan_memory
    from memrl.stages.train import load_training_data

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
        from memrl.utils.progress import progress_bar

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


def _memory_val_split(cfg: DictConfig) -> list[Any]:
    from memrl.data.loaders import load_problems

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
    from memrl.data.templates import format_prompt, resolve_style
    from memrl.policy.load import load_policy
    from memrl.stages.evaluate import build_engine, build_grader

    model, tokenizer, _ = load_policy(cfg.model, cfg.paths.cache_dir)
    style = resolve_style(cfg.model.prompt_style, tokenizer)
    answer_format = str(_value(cfg.data.answer_format))

    def prompt_fn(p: Any) -> str:
        return format_prompt(p, tokenizer, style, answer_format, cfg.model.system_prompt)

    with build_grader(cfg) as grader:
        yield build_engine(cfg.rollout, model, tokenizer), prompt_fn, grader


def check_memreward_config(cfg: DictConfig) -> None:
    """Fail early, with the key's name, on values the stages would only reject later."""
    from memrl.memreward.gnn import MODEL_KINDS
    from memrl.memreward.graph import DIRECTIONS
    from memrl.memreward.training import SELECT_BY
    from memrl.rewards.memreward import REWARD_MODES

    mr = cfg.reward.memreward
    for key, value, valid in [
        ("direction", mr.direction, DIRECTIONS),
        ("reward_mode", mr.reward_mode, REWARD_MODES),
        ("gnn.select_by", mr.gnn.select_by, SELECT_BY),
        ("reward_model", mr.reward_model, MODEL_KINDS),
    ]:
        if str(value) not in valid:
            raise UserError(f"unknown reward.memreward.{key}={value}; valid: {', '.join(valid)}")
    if int(mr.refresh_epochs) < 1:
        raise UserError(f"reward.memreward.refresh_epochs must be >= 1, got {mr.refresh_epochs}")
    if int(mr.refresh_every) < 1:
        raise UserError(f"reward.memreward.refresh_every must be >= 1, got {mr.refresh_every}")
    if int(mr.k) < 1:
        raise UserError(f"reward.memreward.k must be >= 1, got {mr.k}")
    if mr.abstain_band is not None:
        lo, hi = (float(x) for x in mr.abstain_band)
        if not 0.0 <= lo < hi <= 1.0:
            raise UserError(
                f"reward.memreward.abstain_band must be [low, high] with 0 <= low < high <= 1, got {list(mr.abstain_band)}"
            )


# ---------------------------------------------------------------------------------------------------
# memrl graph: embeddings and answer features of the memory (graph/)

GRAPH_DONE, GNN_DONE = "done.json", "report.json"
ROLE_FILES = {"train": "inputs_train.pt", "val": "inputs_val.pt", "report": "inputs_report.pt"}


def graph_dir(run_dir: RunDir) -> Path:
    return Path(run_dir.root) / "graph"


def gnn_dir(run_dir: RunDir) -> Path:
    return Path(run_dir.root) / "gnn"


def build_encoder(cfg: DictConfig) -> Any:
    """The sentence encoder of reward.memreward (the packaged all-MiniLM-L6-v2 unless encoder_path is set)."""
    import torch

    from memrl.memreward.encoder import TextEncoder

    mr = cfg.reward.memreward
    # on a GPU machine the encoder runs there too: online, it embeds every unlabelled rollout of a step
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return TextEncoder(mr.encoder_path, device=device, batch_size=int(mr.encoder_batch_size))


def run_graph(cfg: DictConfig, run_dir: RunDir, encoder: Any = None) -> dict[str, Any]:
    """Embed the memory into `graph/` unless it is complete: one GraphInputs per role, and the label
    tensors of the validation and report rollouts (kept apart from the inputs: only metrics read them)."""
    import time

    import torch

    from memrl.memreward.embed import build_inputs, group_labels, memory_groups
    from memrl.memreward.graph import MemoryGraph
    from memrl.memreward.memory import ExperienceMemory
    from memrl.utils.io import atomic_torch_save, atomic_write_json

    folder = graph_dir(run_dir)
    if reusable(run_dir, cfg, "graph"):
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
        "built_with": config_record(cfg, "graph"),
    }
    atomic_write_json(folder / GRAPH_DONE, info)
    log.info(
        "memory graph (train memory + validation queries): %s nodes, %s edges (%.1fs)",
        info["nodes"],
        info["edges"],
        info["seconds"],
    )
    return info


def load_graph_inputs(run_dir: RunDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """({role: GraphInputs}, {role: [R] labels of val / report rollouts}) from `graph/`."""
    import torch

    from memrl.errors import DataError
    from memrl.memreward.graph import GraphInputs

    folder = graph_dir(run_dir)
    if not (folder / GRAPH_DONE).is_file():
        raise DataError(f"no complete memory graph in {folder} (run `memrl graph --run {run_dir.root}`)")
    inputs = {
        role: GraphInputs.from_dict(torch.load(folder / name, map_location="cpu", weights_only=True))
        for role, name in ROLE_FILES.items()
    }
    return inputs, torch.load(folder / "labels.pt", map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------------
# memrl gnn: train and select the reward GNN, compare with the baselines (gnn/)


def fit_settings(cfg: DictConfig) -> Any:
    from memrl.memreward.training import FitSettings

    g = cfg.reward.memreward.gnn
    return FitSettings(
        lr=float(g.lr),
        max_epochs=int(g.max_epochs),
        eval_every=int(g.eval_every),
        patience=int(g.patience),
        min_epochs=int(g.min_epochs),
        restarts=int(g.restarts),
        select_by=str(g.select_by),
        seed=int(g.seed),
        threshold=float(cfg.reward.memreward.threshold),
    )


def model_spec(cfg: DictConfig, kind: str, inputs: Any) -> dict[str, Any]:
    """What `build_model` needs to rebuild a model of `kind` for these inputs (saved next to its weights)."""
    from memrl.memreward.graph import COMPETES_WITH, EDGE_TYPES

    g, mr = cfg.reward.memreward.gnn, cfg.reward.memreward
    edge_types = [list(et) for et in EDGE_TYPES if et != COMPETES_WITH or int(mr.think_k) > 0]
    return {
        "kind": kind,
        "in_dim": int(inputs.query_emb.shape[1]),
        "feat_dim": int(inputs.answer_feat.shape[1]),
        "hidden": int(g.hidden),
        "heads": int(g.heads),
        "layers": int(g.layers),
        "dropout": float(g.dropout),
        "edge_types": edge_types,
    }


def make_model(spec: dict[str, Any]) -> Any:
    from memrl.memreward.gnn import build_model

    return build_model(
        spec["kind"],
        spec["in_dim"],
        spec["feat_dim"],
        spec["hidden"],
        spec["heads"],
        spec["layers"],
        spec["dropout"],
        edge_types=[tuple(et) for et in spec["edge_types"]],
    )


def run_gnn(cfg: DictConfig, run_dir: RunDir) -> dict[str, Any]:
    """Train the reward GNN (and the baselines) unless `gnn/report.json` exists; returns the report.

    The training graph is the labelled memory with the validation queries attached as unlabelled queries,
    exactly as online queries are; the report queries are attached the same way to the memory alone, so
    their predictions are the ones training would give them.
    """
    import time

    from memrl.memreward.graph import MemoryGraph
    from memrl.memreward.metrics import binary_metrics
    from memrl.memreward.training import predict_proba, supervised_graph
    from memrl.utils.io import atomic_torch_save, atomic_write_json

    folder = gnn_dir(run_dir)
    if reusable(run_dir, cfg, "gnn"):
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
        "built_with": config_record(cfg, "gnn"),
    }
    atomic_write_json(folder / GNN_DONE, report)
    print_gnn_table(report)
    return report


def _fit_with_bar(
    cfg: DictConfig, kind: str, make: Any, graph: Any, train_mask: Any, val_mask: Any, settings: Any
) -> Any:
    """`training.fit` with a progress bar over restarts x max_epochs (early-stopped epochs count as done)."""
    from memrl.memreward.training import fit

    if not cfg.trainer.progress:
        return fit(make, graph, train_mask, val_mask, settings)
    from memrl.utils.progress import progress_bar

    bar = progress_bar(kind)
    bar.start()
    task = bar.add_task(f"fit {kind}", total=settings.restarts * settings.max_epochs, info="")
    try:
        return fit(make, graph, train_mask, val_mask, settings, progress=lambda k: bar.advance(task, k))
    finally:
        bar.stop()


def print_gnn_table(report: dict[str, Any]) -> None:
    """The reward-prediction table of `gnn/report.json` on the held-out (report) queries."""
    from rich.console import Console
    from rich.table import Table

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


WARMUP_PARTS = ("memory", "graph", "gnn")


def reuse_warmup(source: str | Path, run_dir: RunDir, cfg: DictConfig) -> None:
    """Copy another run's finished warm-up (memory/, graph/, gnn/) into this run directory, where the
    warm-up stages then find it done; parts this run already has are kept when they carry the source's config
    records (else refused, or replaced with trainer.resume=disable).

    Raises:
        UserError: the source has no finished warm-up.
    """
    import shutil

    from memrl.memreward.memory import DONE

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


def run_warmup(cfg: DictConfig, run_dir: RunDir, policy: tuple[Any, Any, Any] | None = None) -> dict[str, Any]:
    """`memrl rollout`, `memrl graph` and `memrl gnn` in turn, each skipped when its artifacts exist."""
    memory = run_rollout(cfg, run_dir, policy)
    encoder = build_encoder(cfg)
    graph = run_graph(cfg, run_dir, encoder)
    report = run_gnn(cfg, run_dir)
    return {"memory": memory, "graph": graph, "gnn": report, "encoder": encoder}


def memreward_component(cfg: DictConfig, run_dir: RunDir, policy: tuple[Any, Any, Any]) -> Any:
    """The online MemReward component of a training run, after the warm-up (run here if needed)."""
    import torch

    from memrl.memreward.predictor import RewardPredictor
    from memrl.rewards.memreward import MemRewardReward

    warm = run_warmup(cfg, run_dir, policy)
    inputs, labels = load_graph_inputs(run_dir)
    kind = str(cfg.reward.memreward.reward_model)
    path = gnn_dir(run_dir) / f"{kind}.pt"
    if not path.is_file():
        raise UserError(
            f"reward.memreward.reward_model={kind}, but {path} is missing: this run's `memrl gnn` did not train it; "
            "rerun it with reward.memreward.baselines=true (or in a new run directory)"
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = make_model(saved["spec"])
    model.load_state_dict(saved["state_dict"])
    mr = cfg.reward.memreward
    predictor = RewardPredictor(
        model, saved["spec"], inputs["train"], warm["encoder"], int(mr.k), str(mr.direction), int(mr.think_k)
    )
    band = None if mr.abstain_band is None else tuple(float(x) for x in mr.abstain_band)
    growth = None
    if mr.grow_memory:
        from memrl.rewards.memreward import MemoryGrowth

        # a refresh starts from trained weights: a short fine-tune, no epoch floor, one run
        refresh = dataclasses.replace(fit_settings(cfg), max_epochs=int(mr.refresh_epochs), min_epochs=0, restarts=1)
        growth = MemoryGrowth(int(mr.refresh_every), inputs["val"], labels["val"], refresh)
    return MemRewardReward(predictor, str(mr.reward_mode), float(mr.threshold), band, growth)


def warmup_labels(run_dir: RunDir) -> dict[str, Any]:
    """The labels the warm-up read: {"labelled_ids": [...], "extra_validation_ids": [...]} (from memory/)."""
    from memrl.memreward.memory import DONE

    info = json.loads((memory_dir(run_dir) / DONE).read_text())
    return info["labels"]
