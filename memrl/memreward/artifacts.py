"""MemReward's warm-up artifacts in a run directory (memory/, graph/, gnn/): where they are, how to read them,
and how the reward models and their training are built from the `reward.memreward` config group.

The stages that write them are `memrl.stages.rollout`, `.graph`, `.gnn` (run in turn by `.warmup`); the
online reward that reads them is `memrl.rewards.memreward`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from memrl.errors import DataError
from memrl.memreward.encoder import TextEncoder
from memrl.memreward.gnn import build_model
from memrl.memreward.graph import COMPETES_WITH, EDGE_TYPES, GraphInputs
from memrl.memreward.memory import DONE
from memrl.memreward.training import FitSettings

GRAPH_DONE, GNN_DONE = "done.json", "report.json"
ROLE_FILES = {"train": "inputs_train.pt", "val": "inputs_val.pt", "report": "inputs_report.pt"}
WARMUP_PARTS = ("memory", "graph", "gnn")


def memory_dir(run_dir: Any) -> Path:
    return Path(run_dir.root) / "memory"


def graph_dir(run_dir: Any) -> Path:
    return Path(run_dir.root) / "graph"


def gnn_dir(run_dir: Any) -> Path:
    return Path(run_dir.root) / "gnn"


def load_graph_inputs(run_dir: Any) -> tuple[dict[str, GraphInputs], dict[str, Any]]:
    """({role: GraphInputs}, {role: [R] labels of val / report rollouts}) from `graph/`."""
    folder = graph_dir(run_dir)
    if not (folder / GRAPH_DONE).is_file():
        raise DataError(f"no complete memory graph in {folder} (run `memrl graph --run {run_dir.root}`)")
    inputs = {
        role: GraphInputs.from_dict(torch.load(folder / name, map_location="cpu", weights_only=True))
        for role, name in ROLE_FILES.items()
    }
    return inputs, torch.load(folder / "labels.pt", map_location="cpu", weights_only=True)


def warmup_labels(run_dir: Any) -> dict[str, Any]:
    """The labels the warm-up read: {"labelled_ids": [...], "extra_validation_ids": [...]} (from memory/)."""
    info = json.loads((memory_dir(run_dir) / DONE).read_text())
    return info["labels"]


def build_encoder(cfg: Any) -> TextEncoder:
    """The sentence encoder of reward.memreward (the packaged all-MiniLM-L6-v2 unless encoder_path is set)."""
    mr = cfg.reward.memreward
    # on a GPU machine the encoder runs there too: online, it embeds every unlabelled rollout of a step
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return TextEncoder(mr.encoder_path, device=device, batch_size=int(mr.encoder_batch_size))


def fit_settings(cfg: Any, **overrides: Any) -> FitSettings:
    """The reward model's training settings: a view of reward.memreward.gnn (and its threshold), with `overrides`."""
    return FitSettings(cfg.reward.memreward, **overrides)


def model_spec(cfg: Any, kind: str, inputs: GraphInputs) -> dict[str, Any]:
    """What `build_model` needs to rebuild a model of `kind` for these inputs (saved next to its weights)."""
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


def make_model(spec: dict[str, Any]) -> torch.nn.Module:
    """A fresh model from its saved `model_spec`."""
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
