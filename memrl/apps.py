"""The `@hydra.main` apps behind the CLI, and the wrapper every stage runs in.

Typer (memrl/cli.py) only rewrites `sys.argv` and calls one of these functions, so Hydra itself
parses overrides, `-m/--multirun`, `--cfg`, creates the run directory and configures logging.
`run_stage` writes provenance, records stage status in manifest.json, and turns a `UserError` into a
one-line message (exit code 2 in a single run; the job is marked failed and the sweep goes on in a
multirun).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.distributed.elastic.multiprocessing.errors import record

from memrl import run_dir as reuse
from memrl.config.schema import register_configs
from memrl.data.loaders import default_data_dir
from memrl.dist.env import detect_env, launch_time_resolver
from memrl.errors import UserError
from memrl.policy.tiny import default_cache_dir
from memrl.run_dir import RunDir, original_command
from memrl.stages import evaluate, train

log = logging.getLogger("memrl")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = Path(os.environ.get("MEMRL_CONF_DIR", REPO_ROOT / "conf"))


def _data_dir() -> str:
    return str(default_data_dir())


def _cache_dir() -> str:
    return str(default_cache_dir())


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("memrl_data_dir"):
        OmegaConf.register_new_resolver("memrl_data_dir", _data_dir)
    if not OmegaConf.has_resolver("memrl_cache_dir"):
        OmegaConf.register_new_resolver("memrl_cache_dir", _cache_dir)
    if not OmegaConf.has_resolver("memrl_launch_time"):
        # every torchrun rank resolves rank 0's launch time: one run directory for all (docs/scaling.md)
        OmegaConf.register_new_resolver("memrl_launch_time", launch_time_resolver, use_cache=True)


def setup() -> None:
    """Register the config schemas and resolvers (before any compose)."""
    register_configs()
    _register_resolvers()


def run_stage(cfg: DictConfig, stage: str, fn: Callable[[DictConfig, RunDir], Any]) -> Any:
    """Run one stage inside its run directory with provenance, status and clean user errors."""
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    # paths.output_dir is Hydra's run directory (${hydra:runtime.output_dir}): each job of a sweep has its own
    run_dir = RunDir(Path(cfg.paths.output_dir))
    if not detect_env().is_main:
        # another rank of a torchrun launch: rank 0 keeps the directory's provenance and status (docs/scaling.md)
        return _run_other_rank(cfg, run_dir, fn)
    saved = reuse.snapshot(run_dir)
    try:
        # a run directory never mixes two configurations (docs/run-directory.md)
        reuse.check_reuse(run_dir, cfg, stage)
        run_dir.init_manifest(
            seed=int(cfg.get("seed", 0)),
            command=original_command(),
            overrides=list(hc.overrides.task),
            mode="multirun" if multirun else "run",
        )
        run_dir.write_resolved_config(cfg)
        reuse.accept_hydra_files(run_dir)
        run_dir.set_stage(stage, "running")
        log.info("run directory: %s", run_dir.root)
        result = fn(cfg, run_dir)
    except UserError as e:
        if isinstance(e, reuse.ConfigMismatch):
            # refused: the directory is left as it was (its manifest, and the overrides its results are listed under)
            reuse.restore(run_dir, saved)
        else:
            run_dir.set_stage(stage, "failed", error=str(e))
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        if multirun:
            return None
        sys.exit(2)
    except KeyboardInterrupt:
        run_dir.set_stage(stage, "interrupted")
        raise
    except Exception as e:
        run_dir.set_stage(stage, "failed", error=f"{type(e).__name__}: {e}")
        log.error("stage %s failed:\n%s", stage, traceback.format_exc())
        raise
    run_dir.set_stage(stage, "done")
    return result


def _run_other_rank(cfg: DictConfig, run_dir: RunDir, fn: Callable[[DictConfig, RunDir], Any]) -> Any:
    """`fn` on a rank other than 0: warnings only, no manifest or status writes; a user error exits 2."""
    logging.getLogger().setLevel(logging.WARNING)  # every library's INFO too (the shared memrl.log, the console)
    logging.getLogger("memrl").setLevel(logging.WARNING)
    try:
        return fn(cfg, run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


setup()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def eval_main(cfg: DictConfig) -> Any:
    """`memrl eval`: returns the sample-weighted greedy accuracy (the sweep metric)."""
    result = run_stage(cfg, "eval", evaluate.run)
    return None if result is None else result.get("overall", {}).get("greedy_acc")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@record  # under torchrun: the failing rank's traceback goes to torchrun's error summary
def train_main(cfg: DictConfig) -> Any:
    """`memrl train`: returns the final greedy accuracy on data.eval_sets (the sweep metric), if evaluated."""
    result = run_stage(cfg, "train", train.run)
    if not result or not result.get("final"):
        return None
    return result["final"].get("greedy_acc")


def _warmup_stage(name: str) -> Callable[[DictConfig, RunDir], Any]:
    """`memrl rollout|graph|gnn`: that stage and those before it, each skipped when its artifacts exist."""

    def run(cfg: DictConfig, run_dir: RunDir) -> Any:
        # MemReward's modules load the graph library (torch_geometric): only for MemReward's commands
        from memrl.rewards.memreward import check_memreward_config
        from memrl.stages.warmup import run_warmup

        if str(cfg.reward.name) != "memreward":
            raise UserError(
                f"`memrl {name}` is MemReward's warm-up: it needs reward=memreward, got reward={cfg.reward.name}"
            )
        check_memreward_config(cfg)
        out = run_warmup(cfg, run_dir, until=name)
        return out[{"rollout": "memory"}.get(name, name)]

    return run


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def rollout_main(cfg: DictConfig) -> Any:
    """`memrl rollout`: MemReward's experience memory (memory/)."""
    run_stage(cfg, "rollout", _warmup_stage("rollout"))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def graph_main(cfg: DictConfig) -> Any:
    """`memrl graph`: embeddings and answer features of the memory (graph/)."""
    run_stage(cfg, "graph", _warmup_stage("graph"))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def gnn_main(cfg: DictConfig) -> Any:
    """`memrl gnn`: the reward GNN and its baselines (gnn/model files, gnn/report.json)."""
    run_stage(cfg, "gnn", _warmup_stage("gnn"))
