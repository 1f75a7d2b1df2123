"""The policy's forward pass over a `RolloutBatch`: per-token log-probs, entropy, and hidden states.

One function serves both passes of a step: the no-grad scoring pass (old and reference log-probs, plus the
hidden states a reward component asked for, so that MEDS needs no second forward pass) and the update
pass (with grad). Only the last `R + 1` positions are projected to the vocabulary (`logits_to_keep`), so
a 150k-token vocabulary costs [B, R, V], not [B, P + R, V].
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

from memrl.errors import UserError
from memrl.rl.batch import RolloutBatch
from memrl.rl.core_algos import entropy_from_logits, token_log_probs


@dataclass
class ForwardOutput:
    """log_prob [B, R]; entropy [B, R] or None; hidden_states [B, L + 1, H] at the requested positions or None."""

    log_prob: torch.Tensor
    entropy: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None


COMPUTE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_compute_dtype(name: str, device: str) -> torch.dtype | None:
    """The autocast dtype of `trainer.compute_dtype`: auto -> bfloat16 on a CUDA GPU that supports it, else None
    (float32, no autocast)."""
    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if name not in COMPUTE_DTYPES:
        raise UserError(f"unknown trainer.compute_dtype={name}; valid: auto, {', '.join(COMPUTE_DTYPES)}")
    return COMPUTE_DTYPES[name]


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> Any:
    """bf16/fp16 autocast on CUDA when a compute dtype lower than the parameters' is configured."""
    if dtype is None or device.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def forward_batch(
    model: Any,
    batch: RolloutBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    hidden_positions: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> ForwardOutput:
    """Run the model on a batch (grad follows the caller's grad mode).

    Args:
        model: a Hugging Face causal LM.
        batch: the rows, on the model's device.
        temperature: logits are divided by the sampling temperature, so log-probs are those of the
            distribution the rollouts were drawn from (as verl does).
        with_entropy: also return the per-token entropy.
        hidden_positions: [B] response-token indices (-1: none) at which to return every layer's hidden
            state; None: no hidden states (and `output_hidden_states` stays off).
        compute_dtype: autocast dtype on CUDA (None: the parameters' dtype).

    Returns:
        A `ForwardOutput`.
    """
    R = batch.response_length
    P = batch.prompt_length
    want_hidden = hidden_positions is not None
    device = batch.input_ids.device
    with autocast_context(device, compute_dtype):
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=R + 1,
            output_hidden_states=want_hidden,
            use_cache=False,
        )
    # logits at column P - 1 + t predict response token t
    logits = out.logits[:, :-1, :]
    if temperature != 1.0:
        logits = logits / temperature
    labels = batch.input_ids[:, P:]
    log_prob = token_log_probs(logits, labels)
    entropy = entropy_from_logits(logits) if with_entropy else None
    hidden = None
    if want_hidden:
        pos = hidden_positions.to(device)
        rows = torch.arange(len(pos), device=device)
        cols = (P + pos.clamp_min(0)).long()
        hidden = torch.stack([h[rows, cols].float() for h in out.hidden_states], dim=1)
        hidden[pos < 0] = 0.0
    return ForwardOutput(log_prob=log_prob, entropy=entropy, hidden_states=hidden)
