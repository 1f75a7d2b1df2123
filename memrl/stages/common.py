"""What several stages load the same way: seeds, the training queries with their label split, prompts.

The stages themselves (`evaluate`, `train`, `memreward`) are recipes over these and the builders that sit
next to what they build (`memrl.rollout.build.build_engine`, `memrl.grading.build.build_grader`,
`memrl.rewards.registry.build_reward_pipeline`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from memrl.data.labels import GroundTruth, nested_labelled_ids
from memrl.data.loaders import load_problems
from memrl.data.problem import Problem
from memrl.data.templates import format_prompt, resolve_style
from memrl.errors import UserError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def label_ratio(cfg: DictConfig) -> float:
    """oracle labels everything; partial labels `reward.label_ratio` of the training queries."""
    ratio = float(cfg.reward.label_ratio)
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"reward.label_ratio must be in (0, 1], got {ratio}")
    if str(cfg.reward.name) == "oracle" and ratio != 1.0:
        raise UserError("reward=oracle labels every query; for fewer labels use reward=partial reward.label_ratio=...")
    return ratio


def load_training_data(cfg: DictConfig) -> tuple[list[Problem], list[Problem], GroundTruth]:
    """The training problems, the validation problems (capped by trainer.val_limit) and the label store."""
    if cfg.data.train_set is None:
        raise UserError(
            "this data config has no training set (data.train_set); use data=synthetic, gsm8k_rl or math_rl, "
            "or give one: data.train_set={name: mine, source: local, path: train.jsonl, split: train}"
        )
    data_dir = Path(cfg.paths.data_dir)
    train_problems = load_problems(cfg.data.train_set, data_dir, cfg.data.synthetic)
    val_problems = load_problems(cfg.data.val_set, data_dir, cfg.data.synthetic) if cfg.data.val_set else []
    if cfg.trainer.val_limit is not None:
        val_problems = val_problems[: int(cfg.trainer.val_limit)]
    labelled = nested_labelled_ids([p.id for p in train_problems], label_ratio(cfg), int(cfg.reward.label_seed))
    log.info(
        "training queries: %d, labelled: %d (label_ratio %.2f); validation queries: %d",
        len(train_problems),
        len(labelled),
        float(cfg.reward.label_ratio),
        len(val_problems),
    )
    return train_problems, val_problems, GroundTruth(train_problems, labelled)


def prompt_builder(cfg: DictConfig, tokenizer: Any) -> tuple[Callable[[Problem], str], str]:
    """(problem -> prompt text, the resolved prompt style) from model.prompt_style / system_prompt and
    data.answer_format."""
    style = resolve_style(cfg.model.prompt_style, tokenizer)
    answer_format = str(getattr(cfg.data.answer_format, "value", cfg.data.answer_format))

    def prompt_fn(p: Problem) -> str:
        return format_prompt(p, tokenizer, style, answer_format, cfg.model.system_prompt)

    return prompt_fn, style
