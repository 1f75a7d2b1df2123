"""FSDP2 for a Hugging Face causal LM: `fully_shard` on every decoder layer, then on the root.

Each decoder layer is one communication group (its parameters are all-gathered before its forward and
its gradients reduce-scattered after its backward); the root group holds the rest (embeddings, final
norm, LM head; tied embeddings stay one parameter). The decoder layers are found through the model's own
`_no_split_modules` (the layer classes Hugging Face never splits across devices), so Qwen2, Qwen3 and
Llama-like models need no per-architecture code.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from memrl.dist.runtime import enum_value
from memrl.errors import UserError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_mixed_precision(settings: Any, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(param_dtype, reduce_dtype) of `dist.mixed_precision`: auto -> bfloat16 compute on a GPU that supports
    it, float32 on CPU; float32 gradient reduction."""
    mp = settings.mixed_precision
    param, reduce = str(enum_value(mp.param_dtype)), str(enum_value(mp.reduce_dtype))
    for key, v in (("param_dtype", param), ("reduce_dtype", reduce)):
        if v != "auto" and v not in _DTYPES:
            raise UserError(f"dist.mixed_precision.{key}={v!r}: choose one of auto, {', '.join(_DTYPES)}")
    if param == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        param_dtype = torch.bfloat16 if bf16 else torch.float32
    else:
        param_dtype = _DTYPES[param]
    reduce_dtype = torch.float32 if reduce == "auto" else _DTYPES[reduce]
    return param_dtype, reduce_dtype


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers (instances of the classes in `_no_split_modules`), in order."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise UserError(
            f"cannot shard {type(model).__name__}: it names no decoder layer class in _no_split_modules "
            "(dist.strategy=fsdp2 needs a Hugging Face decoder model)"
        )
    return layers


def shard_model(model: torch.nn.Module, mesh: Any, settings: Any) -> torch.nn.Module:
    """Apply FSDP2 in place (decoder layers, then root) and return the model.

    `settings` is a `DistConfig`: mixed_precision, reshard_after_forward, cpu_offload. The model must be
    on the mesh's device (or on CPU with cpu_offload); its parameters become DTensors sharded on dim 0.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    device = torch.device(mesh.device_type)
    param_dtype, reduce_dtype = resolve_mixed_precision(settings, device)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    offload = CPUOffloadPolicy(pin_memory=device.type == "cuda") if settings.cpu_offload else OffloadPolicy()
    reshard = bool(settings.reshard_after_forward)
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, mesh=mesh, reshard_after_forward=reshard, mp_policy=mp, offload_policy=offload)
    # the root's parameters are needed first in backward: keep them gathered after forward
    fully_shard(model, mesh=mesh, reshard_after_forward=False, mp_policy=mp, offload_policy=offload)
    log.info(
        "FSDP2: %d decoder layers + root over mesh %s, params %s, reduce %s, reshard_after_forward=%s, cpu_offload=%s",
        len(layers),
        tuple(mesh.shape),
        param_dtype,
        reduce_dtype,
        reshard,
        bool(settings.cpu_offload),
    )
    return model
