"""`memrl graph`: the second of MemReward's warm-up stages, embeddings and answer features of the memory (graph/).

Reads memory/ (`memrl.stages.rollout`); `memrl.stages.gnn` trains on what this writes. The graph itself is
`memrl.memreward.graph`, the embeddings `memrl.memreward.embed`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import torch
from omegaconf import DictConfig

from memrl.memreward.artifacts import GRAPH_DONE, ROLE_FILES, build_encoder, graph_dir, memory_dir
from memrl.memreward.embed import build_inputs, group_labels, memory_groups
from memrl.memreward.graph import MemoryGraph
from memrl.memreward.memory import ExperienceMemory
from memrl.run_dir import RunDir, config_record, reusable
from memrl.utils.io import atomic_torch_save, atomic_write_json

log = logging.getLogger(__name__)


def run_graph(cfg: DictConfig, run_dir: RunDir, encoder: Any = None) -> dict[str, Any]:
    """Embed the memory into `graph/` unless it is complete: one GraphInputs per role, and the label
    tensors of the validation and report rollouts (kept apart from the inputs: only metrics read them)."""

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
