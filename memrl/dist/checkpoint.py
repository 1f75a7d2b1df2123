"""Sharded checkpoints of a distributed run with Distributed Checkpoint (DCP), and Hugging Face export.

`train/global_step_N/` of a distributed run holds:

- `dcp/`: one DCP checkpoint with the sharded model and optimiser (`model.*`, `optim.*`, from
  `get_state_dict`, so it reloads at another world size: DCP reshards), the LR scheduler's state
  (`scheduler.*`, the same on every rank) and each rank's RNG states under its own key `rng.rank{r}`
  (under one shared key every rank would reload rank 0's generators);
- `rewards.pt`: the reward components' state, one opaque blob saved by rank 0 with `torch.save` (DCP
  splits nested dicts into keys and loads only keys the target already has, so a nested reward state
  would not come back);
- `trainer_state.json` (rank 0; step, data position, best validation, and `world_size`), written after
  every rank's shards; `policy/` when exported (`export_hf`).

`train/latest` is written by rank 0 after a barrier, last, so a run killed at any moment resumes from the
last complete checkpoint (`memrl.rl.checkpoint.latest_checkpoint` reads it, the same as for one process).

Async save (`DistCheckpointer(async_save=True)`) runs DCP's `async_save` on a gloo process group of its
own: on the default group its collectives interleave with the training's and break gloo. The step's files
other than the shards are written when the save completes (`wait()`, or the next `save`).

Resume at another world size loads and continues (DCP reshards the model and optimiser); the RNG streams
cannot be mapped onto a different number of ranks, so they are left as seeded and a warning says so.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from memrl.dist.runtime import barrier
from memrl.utils.checkpoints import LATEST, PREFIX, list_checkpoints, rng_state, set_rng_state
from memrl.utils.io import atomic_torch_save, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

DCP_DIR = "dcp"
REWARDS = "rewards.pt"
TRAINER_STATE = "trainer_state.json"
POLICY = "policy"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rng_key(rank: int) -> str:
    return f"rng.rank{rank}"


def _state(model: Any, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    return state


def saved_world_size(path: Path) -> int | None:
    """The number of ranks that wrote checkpoint `path` (from its trainer_state.json)."""
    f = Path(path) / TRAINER_STATE
    return json.loads(f.read_text()).get("world_size") if f.exists() else None


class DistCheckpointer:
    """Saves and loads `global_step_N/` checkpoints of a sharded run; every rank calls every method.

    Args:
        train_dir: the run's `train/` folder (shared by all ranks: one filesystem).
        async_save: stage the shards and write them in the background (DCP async_save) on a dedicated
            gloo group; `wait()` completes a pending save.
        keep: keep the newest `keep` checkpoints (None: all), except the steps in `protect` of `save`.
        timeout_s: the collective timeout of the async group.
    """

    def __init__(self, train_dir: Path, async_save: bool = False, keep: int | None = None, timeout_s: float = 600):
        self.train_dir = Path(train_dir)
        self.async_save = async_save
        self.keep = keep
        self._pending: tuple[Any, Path, dict[str, Any], Any, frozenset[int]] | None = None
        self._group = None
        if async_save and dist.is_initialized():
            # collective: every rank creates it, in the same order
            self._group = dist.new_group(backend="gloo", timeout=_dt.timedelta(seconds=timeout_s))

    # -- save ----------------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        model: Any,
        optimizer: Any,
        scheduler: Any = None,
        trainer_state: dict[str, Any] | None = None,
        reward_state: Any = None,
        protect: frozenset[int] = frozenset(),
        export_tokenizer: Any = None,
    ) -> Path:
        """Write `global_step_<step>/` (shards, RNG, scheduler; rank 0: rewards, trainer state), then `latest`.

        `reward_state` matters on rank 0 only. With `export_tokenizer` the full weights and that tokenizer are
        also written as a Hugging Face folder, `policy/` (what `memrl eval <run>` and `memrl.policy.load` read).
        With async_save this returns once the shards are staged; the rest is written when the save completes.
        """
        import torch.distributed.checkpoint as dcp

        self.wait()
        final = self.train_dir / f"{PREFIX}{step}"
        if _rank() == 0:
            self.train_dir.mkdir(parents=True, exist_ok=True)
            if final.exists():  # a leftover of an earlier run that reached this step
                shutil.rmtree(final)
        barrier()
        if export_tokenizer is not None:
            export_hf(model, final / POLICY, export_tokenizer)
        # get_state_dict initialises an optimiser that has not stepped yet with a zero-gradient step (Adam's step
        # count becomes 1): undone here and on load, or a checkpoint before the first update changes the run
        stepped = bool(optimizer.state)
        state = _state(model, optimizer, scheduler)
        if not stepped:
            optimizer.state.clear()
        state[rng_key(_rank())] = rng_state()
        meta = {"step": step, **(trainer_state or {}), "world_size": _world(), "optimizer_stepped": stepped}
        blob = reward_state if _rank() == 0 else None
        if self.async_save and self._group is not None:
            future = dcp.async_save(state, checkpoint_id=str(final / DCP_DIR), process_group=self._group)
            self._pending = (future, final, meta, blob, protect)
        else:
            dcp.save(state, checkpoint_id=str(final / DCP_DIR))
            self._finish(final, meta, blob, protect)
        return final

    def wait(self) -> None:
        """Complete a pending async save (no-op otherwise)."""
        if self._pending is None:
            return
        future, final, meta, blob, protect = self._pending
        self._pending = None
        result = getattr(future, "upload_completion", future)
        result.result()
        self._finish(final, meta, blob, protect)

    def _finish(self, final: Path, meta: dict[str, Any], blob: Any, protect: frozenset[int]) -> None:
        barrier(self._group)  # every rank's shards are on disk
        if _rank() == 0:
            atomic_torch_save(blob, final / REWARDS)
            atomic_write_json(final / TRAINER_STATE, meta)
            atomic_write_text(self.train_dir / LATEST, final.name + "\n")
            if self.keep is not None and self.keep > 0:
                for old in list_checkpoints(self.train_dir)[: -self.keep]:
                    if old not in protect:
                        shutil.rmtree(self.train_dir / f"{PREFIX}{old}", ignore_errors=True)
        barrier(self._group)

    def close(self) -> None:
        """Complete a pending save and release the async group."""
        self.wait()
        if self._group is not None:
            dist.destroy_process_group(self._group)
            self._group = None

    # -- load ----------------------------------------------------------------------------------------
    def load(self, path: Path, model: Any, optimizer: Any, scheduler: Any = None) -> dict[str, Any]:
        """Restore model, optimiser, scheduler and (same world size) RNG in place, on every rank.

        Returns {"trainer": trainer_state.json, "rewards": the reward blob (rank 0; None elsewhere),
        "resharded": whether the checkpoint was written by another number of ranks}.
        """
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        self.wait()
        path = Path(path)
        trainer = json.loads((path / TRAINER_STATE).read_text())
        saved = trainer.get("world_size")
        resharded = saved != _world()
        state = _state(model, optimizer, scheduler)
        if not resharded:
            state[rng_key(_rank())] = rng_state()
        dcp.load(state, checkpoint_id=str(path / DCP_DIR))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        if not trainer.get("optimizer_stepped", True):
            optimizer.state.clear()  # saved before the first update: no moments, Adam's step count 0
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if resharded:
            if _rank() == 0:
                log.warning(
                    "checkpoint %s was written by %s ranks and is resumed on %d: model and optimiser are "
                    "resharded exactly, but the random streams differ from an uninterrupted run",
                    path,
                    saved,
                    _world(),
                )
        else:
            set_rng_state(state[rng_key(_rank())])
        rewards = torch.load(path / REWARDS, weights_only=False) if _rank() == 0 else None
        return {"trainer": trainer, "rewards": rewards, "resharded": resharded}


def load_model(path: Path, model: Any) -> None:
    """Load only the model's weights of checkpoint `path` into the sharded `model` (every rank calls it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=str(Path(path) / DCP_DIR))
    set_model_state_dict(model, state["model"])


def full_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The unsharded model state dict on rank 0 (on CPU), an empty dict elsewhere; every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_hf(model: Any, out_dir: Path, tokenizer: Any = None) -> Path:
    """Write the full weights as a Hugging Face folder (rank 0, from the full state dict; every rank calls it).

    `memrl eval model.name_or_path=<out_dir>` and `from_pretrained` read the result.
    """
    out_dir = Path(out_dir)
    full = full_state_dict(model)
    if _rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir, state_dict=full, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(out_dir)
    barrier()
    return out_dir
