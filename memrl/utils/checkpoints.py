"""The checkpoint folder layout that one-process (`memrl.rl.checkpoint`) and distributed
(`memrl.dist.checkpoint`) training share: `train/global_step_N/` folders, the `train/latest` pointer, and the
RNG states a checkpoint carries. It lives below both packages so that neither imports the other for it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest"
PREFIX = "global_step_"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(train_dir: Path) -> list[int]:
    """Steps of the complete checkpoints under `train_dir`."""
    out = []
    for p in Path(train_dir).glob(f"{PREFIX}*"):
        try:
            step = int(p.name[len(PREFIX) :])
        except ValueError:
            continue
        if (p / "trainer_state.json").exists():
            out.append(step)
    return sorted(out)
