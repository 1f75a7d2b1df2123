"""MemReward's warm-up: `memrl rollout`, `memrl graph`, `memrl gnn` in turn (and `memrl train` with reward=memreward).

Runbook:
    memrl rollout reward=memreward                       # memory/: rollouts of the initial policy, graded
    memrl graph --run outputs/rollout/<run>              # graph/: embeddings, answer features, the graph
    memrl gnn --run outputs/rollout/<run>                # gnn/: the reward GNN, report.json (and baselines)
    memrl train reward=memreward reward.label_ratio=0.2  # runs whichever of the three is missing, then RL

Each stage (`memrl.stages.rollout`, `.graph`, `.gnn`) writes its artifacts into the run directory and is
skipped when they exist (a killed warm-up resumes at the first incomplete stage). The label split and the
memory's queries follow the train config, so the three stages and `memrl train` agree on them. The online
reward built from the result is `memrl.rewards.memreward`; the memory, graph and GNN are `memrl.memreward`.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from memrl.memreward.artifacts import build_encoder
from memrl.run_dir import RunDir
from memrl.stages.gnn import run_gnn
from memrl.stages.graph import run_graph
from memrl.stages.rollout import run_rollout

STAGES = ("rollout", "graph", "gnn")


def run_warmup(
    cfg: DictConfig, run_dir: RunDir, policy: tuple[Any, Any, Any] | None = None, until: str = "gnn"
) -> dict[str, Any]:
    """The warm-up stages in turn up to `until` (rollout | graph | gnn), each skipped when its artifacts exist.

    Args:
        policy: (engine, prompt_fn, grader) when the caller (memrl train) already has them; else the rollout
            stage builds them from the config.

    Returns:
        {"memory": ..., "graph": ..., "gnn": ...} for the stages run, and the sentence "encoder" (its cache
        carries over to the online reward) once the graph stage ran.
    """
    out: dict[str, Any] = {"memory": run_rollout(cfg, run_dir, policy)}
    if STAGES.index(until) >= 1:
        out["encoder"] = build_encoder(cfg)
        out["graph"] = run_graph(cfg, run_dir, out["encoder"])
    if STAGES.index(until) >= 2:
        out["gnn"] = run_gnn(cfg, run_dir)
    return out
