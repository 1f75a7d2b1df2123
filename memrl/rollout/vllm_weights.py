"""The policy's weights as a stream of (checkpoint name, full tensor) pairs, one parameter at a time.

This is what the vLLM engine's `reload_weights(weights_iterator=...)` consumes after every policy update
(`memrl.rollout.vllm_engine.VLLMEngine.sync_weights`). It needs no vLLM, so it is tested in the main
environment.

Under FSDP2 (`dist=fsdp2`) every parameter is a DTensor holding this rank's shard. Each one is cast to the
engine's dtype on its shard first (so the all-gather moves, and the rank holds, the smaller dtype), then
gathered with `full_tensor()`, yielded, and dropped before the next one is gathered: at no time does a rank
hold more than one full parameter besides the engine's own copy. `full_tensor()` is a collective over the
shard's mesh, so every rank must consume the stream to the end and in the same order (the state dict's
order, which is the same on every rank). Plain tensors (one process, `dist=none`) are yielded as they are,
cast to the engine's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def _is_dtensor(t: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return False
    return isinstance(t, DTensor)


def full_tensor(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`t` whole (a DTensor gathered from every rank of its mesh, a plain tensor as it is), detached, with
    floating-point values cast to `dtype` (None: kept) before the gather."""
    t = t.detach()
    if dtype is not None and t.is_floating_point() and t.dtype != dtype:
        t = t.to(dtype)
    if not _is_dtensor(t):
        return t
    from torch.distributed.tensor import DTensor

    mesh = t.device_mesh
    if t.device.type != mesh.device_type:
        # a CPU-offloaded shard (dist.cpu_offload) gathers on the mesh's device (NCCL cannot send CPU tensors)
        t = DTensor.from_local(t.to_local().to(mesh.device_type), mesh, t.placements, shape=t.shape, stride=t.stride())
    return t.full_tensor()


def stream_weights(model: Any, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, full tensor) of every parameter and persistent buffer of `model`, in state-dict order.

    Names are the transformers checkpoint's (FSDP2 keeps them), what vLLM's `load_weights` maps. Under FSDP2
    this is a sequence of collectives: call it on every rank and consume it whole.
    """
    for name, tensor in model.state_dict().items():
        yield name, full_tensor(tensor, dtype)
