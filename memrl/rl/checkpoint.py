"""Checkpoints of a training run: `train/global_step_N/` plus the `train/latest` pointer, written last.

A checkpoint folder holds the policy (`policy/`, a Hugging Face model folder with the tokenizer, so
`memrl eval model.name_or_path=<run>` works), `optimizer.pt`, `scheduler.pt`, `rng.pt` (Python, NumPy,
torch CPU and CUDA generators), `rewards.pt` (every reward component's state) and `trainer_state.json`
(step, prompt-sampler position, metrics history length). It is written into a temporary folder and
renamed into place; `latest` is replaced atomically only after that, so a run killed at any moment resumes
from the last complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from memrl.utils.checkpoints import LATEST, PREFIX, list_checkpoints, rng_state, set_rng_state
from memrl.utils.io import atomic_write_text

__all__ = [
    "LATEST",
    "PREFIX",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_policy_weights",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


def save_checkpoint(
    train_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    reward_state: dict[str, Any],
    keep: int | None = None,
    protect: frozenset[int] = frozenset(),
) -> Path:
    """Write `train_dir/global_step_<step>/` atomically, then point `train_dir/latest` at it; then remove all
    but the newest `keep` checkpoints, except the steps in `protect` (e.g. the best validation step)."""
    train_dir = Path(train_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    final = train_dir / f"{PREFIX}{step}"
    # half-written folders of a writer that was killed: one process writes checkpoints, so none is in use
    for stale in train_dir.glob(f".{PREFIX}*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{PREFIX}{step}.tmp-", dir=train_dir))
    try:
        model.save_pretrained(tmp / "policy", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "policy")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        torch.save(reward_state, tmp / "rewards.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))
        if final.exists():  # a leftover of an earlier run that reached this step: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(train_dir / LATEST, final.name + "\n")
    if keep is not None and keep > 0:
        for old in sorted(list_checkpoints(train_dir))[:-keep]:
            if old not in protect:
                shutil.rmtree(train_dir / f"{PREFIX}{old}", ignore_errors=True)
    return final


def latest_checkpoint(train_dir: Path) -> Path | None:
    """The folder `train_dir/latest` names, or None when there is no complete checkpoint."""
    pointer = Path(train_dir) / LATEST
    if not pointer.exists():
        return None
    path = Path(train_dir) / pointer.read_text().strip()
    return path if (path / "trainer_state.json").exists() else None


def load_policy_weights(path: Path, model: Any) -> None:
    """Load a checkpoint's policy weights (`path/policy/*.safetensors`) into `model` in place.

    Raises:
        RuntimeError: the weights do not match the model.
    """
    path = Path(path)
    weights = {}
    for f in sorted((path / "policy").glob("*.safetensors")):
        weights.update(load_file(str(f)))
    device = next(model.parameters()).device
    missing, unexpected = model.load_state_dict({k: v.to(device) for k, v in weights.items()}, strict=False)
    # tied embeddings are saved once; anything else missing is a real mismatch
    missing = [
        k for k in missing if not (k == "lm_head.weight" and getattr(model.config, "tie_word_embeddings", False))
    ]
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore policy weights, optimiser, scheduler and RNG states in place; returns trainer and reward state."""
    path = Path(path)
    load_policy_weights(path, model)
    device = next(model.parameters()).device
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return {
        "trainer": json.loads((path / "trainer_state.json").read_text()),
        "rewards": torch.load(path / "rewards.pt", weights_only=False),
    }
