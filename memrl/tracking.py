"""Experiment trackers: `logger=none` (files only) or `logger=wandb` (offline unless logger.mode=online).

Metric keys are namespaced as in verl (`eval/<bench>/pass@k`, `actor/...`, `reward/...`), so curves
are comparable with peers. `none` is a real tracker that does nothing, so callers never branch on it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from memrl.config.schema import LoggerConfig
from memrl.errors import UserError

log = logging.getLogger(__name__)


class NoTracker:
    """Metrics stay in the run directory's files."""

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbTracker:
    """Weights & Biases run stored under `<run_dir>/wandb` (offline by default: sync later with `wandb sync`)."""

    def __init__(
        self, run_dir: str, project: str, mode: str, config: dict[str, Any], name: str, tags: list[str]
    ) -> None:
        import wandb

        if mode not in ("offline", "online", "disabled"):
            raise UserError(f"unknown logger.mode={mode}; valid: offline, online, disabled")
        os.makedirs(os.path.join(run_dir, "wandb"), exist_ok=True)
        self.run = wandb.init(
            project=project, mode=mode, dir=run_dir, config=config, name=name, tags=tags, reinit="finish_previous"
        )

    def log(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def finish(self) -> None:
        self.run.finish()


def build_tracker(
    logger_cfg: LoggerConfig, run_dir: str, config: dict[str, Any], name: str
) -> NoTracker | WandbTracker:
    """The tracker named by `logger.backend`."""
    backend = str(logger_cfg.backend)
    if backend == "none":
        return NoTracker()
    if backend == "wandb":
        return WandbTracker(run_dir, str(logger_cfg.project), str(logger_cfg.mode), config, name, list(logger_cfg.tags))
    raise UserError(f"unknown logger.backend={backend}; valid: none, wandb")


def flatten_eval_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """`eval/<bench>/<metric>` scalars from an eval results dict (pass@k as `pass@<k>`)."""
    out: dict[str, float] = {}
    rows = dict(results.get("benchmarks", {}))
    if "overall" in results:
        rows["overall"] = results["overall"]
    for bench, m in rows.items():
        for key, value in m.items():
            if key == "pass@k":
                for k, v in value.items():
                    out[f"eval/{bench}/pass@{k}"] = float(v)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"eval/{bench}/{key}"] = float(value)
    return out
