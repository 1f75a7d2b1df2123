"""`memrl gnn`: the last of MemReward's warm-up stages, the reward GNN and its baselines (gnn/).

Reads graph/ (`memrl.stages.graph`), trains and selects each model (`memrl.memreward.training`), writes
their weights and gnn/report.json, and prints the report's table. The online reward that uses the GNN is
`memrl.rewards.memreward`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from omegaconf import DictConfig

from memrl.memreward.artifacts import GNN_DONE, fit_settings, gnn_dir, load_graph_inputs, make_model, model_spec
from memrl.memreward.graph import MemoryGraph
from memrl.memreward.metrics import binary_metrics, print_report_table
from memrl.memreward.training import FitResult, FitSettings, fit, predict_proba, supervised_graph
from memrl.run_dir import RunDir, config_record, reusable
from memrl.utils.io import atomic_torch_save, atomic_write_json
from memrl.utils.progress import progress_bar

log = logging.getLogger(__name__)


def run_gnn(cfg: DictConfig, run_dir: RunDir) -> dict[str, Any]:
    """Train the reward GNN (and the baselines) unless `gnn/report.json` exists; returns the report.

    The training graph is the labelled memory with the validation queries attached as unlabelled queries,
    exactly as online queries are; the report queries are attached the same way to the memory alone, so
    their predictions are the ones training would give them.
    """
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
    print_report_table(report)
    return report


def _fit_with_bar(
    cfg: DictConfig, kind: str, make: Any, graph: Any, train_mask: Any, val_mask: Any, settings: FitSettings
) -> FitResult:
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
