"""The process group, the device mesh and the collectives the trainer needs on top of FSDP2.

- `init_distributed(settings)`: the default process group (backend auto: nccl on CUDA, gloo on CPU) with
  `dist.timeout_s` as the collective timeout, so a dead or stuck rank fails every rank instead of hanging;
  sets this rank's CUDA device. `shutdown()` tears it down (idempotent).
- `build_mesh(settings, ctx)`: a 1-D mesh ("shard",) or, with `mesh.replicate > 1`, a 2-D ("replicate",
  "shard") mesh for HSDP (replicate across nodes, shard inside one).
- Rank 0 decides: `broadcast_object` (e.g. the run directory, DAPO's keep/refill decision),
  `gather_objects` (each rank's groups to rank 0 for the stateful reward components), `all_gather_objects`.
- Loss scaling: FSDP2 averages gradients over the data-parallel ranks. With `global_sum` of the token (or
  sequence) count over ranks, `dp_loss_scale(global_count, world)` turns each rank's *sum* of per-token
  losses into a loss whose averaged gradient is the gradient of the global token mean: the same for any
  number of ranks.
- `grad_norm_value`: `clip_grad_norm_` returns a DTensor under FSDP2; read it with `full_tensor()`.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from memrl.dist.env import DistEnv, detect_env
from memrl.errors import UserError

log = logging.getLogger(__name__)


def enum_value(x: Any) -> Any:
    """An Enum's value, or the thing itself (settings may hold Enums or their strings)."""
    return getattr(x, "value", x)


@dataclass(frozen=True)
class DistContext:
    """An initialised process group: this rank's place, its device and the backend in use."""

    env: DistEnv
    backend: str
    device: torch.device
    timeout_s: float

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def is_main(self) -> bool:
        return self.env.is_main


def resolve_backend(backend: Any) -> str:
    """`auto` -> nccl when CUDA is available, else gloo; an explicit nccl without CUDA is a UserError."""
    backend = str(enum_value(backend))
    if backend == "auto":
        return "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise UserError("dist.backend=nccl needs CUDA, which this machine does not have; use auto or gloo")
    if backend not in ("nccl", "gloo"):
        raise UserError(f"dist.backend={backend!r}: choose one of auto, nccl, gloo")
    return backend


def init_distributed(settings: Any, env: DistEnv | None = None) -> DistContext:
    """Join the default process group of this torchrun launch (`settings`: a `DistConfig`).

    Idempotent: a second call returns the context of the group already there.
    """
    env = env or detect_env()
    backend = resolve_backend(settings.backend)
    timeout_s = float(settings.timeout_s)
    if timeout_s <= 0:
        raise UserError(f"dist.timeout_s={settings.timeout_s}: must be positive (seconds)")
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=env.rank,
            world_size=env.world_size,
            timeout=_dt.timedelta(seconds=timeout_s),
            device_id=device if backend == "nccl" else None,
        )
    if not env.is_main:
        # one voice: the other ranks report warnings and errors only
        logging.getLogger("memrl").setLevel(logging.WARNING)
    return DistContext(env=env, backend=backend, device=device, timeout_s=timeout_s)


def shutdown() -> None:
    """Leave the process group (nothing to do when none is initialised)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def mesh_shape(settings: Any, world_size: int) -> tuple[int, int]:
    """(replicate, shard) for `world_size` processes; a mismatch is a UserError naming dist.mesh.*."""
    replicate = int(settings.mesh.replicate)
    shard = settings.mesh.shard
    if replicate < 1:
        raise UserError(f"dist.mesh.replicate={replicate}: must be >= 1")
    if shard is None:
        if world_size % replicate:
            raise UserError(
                f"dist.mesh.replicate={replicate} does not divide the {world_size} processes of this launch"
            )
        shard = world_size // replicate
    shard = int(shard)
    if shard < 1 or replicate * shard != world_size:
        raise UserError(
            f"dist.mesh.replicate={replicate} x dist.mesh.shard={shard} = {replicate * shard} processes, but this "
            f"launch has {world_size} (torchrun --nnodes x --nproc_per_node)"
        )
    return replicate, shard


def build_mesh(settings: Any, ctx: DistContext) -> Any:
    """The data-parallel DeviceMesh: ("shard",), or ("replicate", "shard") for HSDP."""
    from torch.distributed.device_mesh import init_device_mesh

    replicate, shard = mesh_shape(settings, ctx.world_size)
    if replicate == 1:
        return init_device_mesh(ctx.device.type, (shard,), mesh_dim_names=("shard",))
    return init_device_mesh(ctx.device.type, (replicate, shard), mesh_dim_names=("replicate", "shard"))


# ---------------------------------------------------------------------------------------------------
# rank 0 decides


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_object(obj: Any, src: int = 0, group: Any = None) -> Any:
    """`obj` as rank `src` has it, on every rank (picklable objects; the identity in one process)."""
    if not _active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


def gather_objects(obj: Any, dst: int = 0, group: Any = None) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank `dst`; None on the other ranks."""
    if not _active():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size(group) if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst, group=group)
    return out


def all_gather_objects(obj: Any, group: Any = None) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def barrier(group: Any = None) -> None:
    """Wait for every rank (nothing in one process)."""
    if _active():
        dist.barrier(group=group)


# ---------------------------------------------------------------------------------------------------
# loss scaling and gradient norm


def global_sum(value: float | int | torch.Tensor, device: torch.device | str = "cpu", group: Any = None) -> float:
    """The sum of `value` over all ranks (e.g. a mini-batch's response-token count)."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device).detach().clone().reshape(())
    if _active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return float(t.item())


def dp_loss_scale(global_count: float, dp_world_size: int | None = None) -> float:
    """The factor for a rank's loss *sum* so that FSDP2's gradient average is the global mean's gradient.

    FSDP2 divides the summed gradients by the data-parallel size W (replicate x shard). A rank that
    back-propagates `sum_of_its_token_losses * W / global_count` therefore contributes, after the average,
    exactly its share of `sum_over_all_tokens / global_count`: the result does not depend on W.
    """
    if global_count <= 0:
        raise ValueError(f"global count must be positive, got {global_count}")
    if dp_world_size is None:
        dp_world_size = dist.get_world_size() if _active() else 1
    return float(dp_world_size) / float(global_count)


def grad_norm_value(norm: Any) -> float:
    """A gradient norm as a float: `clip_grad_norm_` returns a DTensor under FSDP2 (read via full_tensor())."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(torch.as_tensor(norm).item())
