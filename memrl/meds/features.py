"""The MEDS feature: what each layer's hidden state at the anchor says about the first answer token.

For layer l, `lm_head(h_l)[target]`, the raw logit (no softmax, no temperature) that the layer's hidden
state at the anchor gives the token that actually follows (docs/methods.md#layer-wise-logit-feature). It is computed as a dot product
with the target's row of the output matrix, [B, L, H] x [B, H], never as a [B, L, V] projection.

Hugging Face's last hidden state is already final-normed, so by default the last value is the true output
logit and the others are un-normed logit-lens values (the released code's semantics); `final_norm=True`
applies the model's final norm to every earlier layer too.
"""

from __future__ import annotations

from typing import Any

import torch


def output_head(model: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output matrix [V, H] and bias [V] (or None) of a causal LM."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (lm_head) to read logits from")
    return head.weight, getattr(head, "bias", None)


def final_norm_module(model: Any) -> Any:
    """The final norm applied before `lm_head` (Qwen2 / Llama: `model.model.norm`)."""
    for path in ("model.norm", "model.final_layernorm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        obj = model
        for name in path.split("."):
            obj = getattr(obj, name, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise ValueError(
        f"meds.final_norm=true: cannot find the final norm of {type(model).__name__}; use meds.final_norm=false"
    )


def layer_logits(
    hidden: torch.Tensor,
    target_ids: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    norm: Any = None,
) -> torch.Tensor:
    """Per layer, the logit the hidden state gives the target token.

    Args:
        hidden: [B, L + 1, H] hidden states at the anchors (embedding output first, then each layer; the
            last entry already final-normed, as Hugging Face returns it).
        target_ids: [B] the token after each anchor.
        weight: [V, H] the output matrix; bias: [V] or None.
        norm: when given, applied to layers 1..L-1 (the last is already normed).

    Returns:
        [B, L] float32: entry (b, l) = (weight @ h_{l+1} + bias)[target_b]; the embedding output is dropped.
    """
    layers = hidden[:, 1:, :].float()
    if norm is not None and layers.shape[1] > 1:
        with torch.no_grad():
            inner = norm(layers[:, :-1, :].to(next(norm.parameters()).dtype)).float()
        layers = torch.cat([inner, layers[:, -1:, :]], dim=1)
    rows = weight.detach()[target_ids.to(weight.device)].float().to(layers.device)  # [B, H]
    out = torch.einsum("blh,bh->bl", layers, rows)
    if bias is not None:
        out = out + bias.detach()[target_ids.to(bias.device)].float().to(out.device).unsqueeze(1)
    return out


def select_layers(logits: torch.Tensor, last_n: int | None, layer_diff: bool = False) -> torch.Tensor:
    """The feature vector: the last `last_n` layers' logits (None: half the layers), or their differences.

    Args:
        logits: [B, L] from `layer_logits`.
        last_n: values kept, counted from the last layer (0 or too many: all of them).
        layer_diff: first replace the L values by the L - 1 differences between consecutive layers (the
            released code applies np.diff before keeping the last n), then keep the last n of those.

    Returns:
        [B, n], n = min(last_n, L) (L // 2 when None; at most L - 1 with `layer_diff`).
    """
    L = logits.shape[1]
    n = max(1, L // 2) if last_n is None else (L if last_n <= 0 else min(int(last_n), L))
    if layer_diff and L > 1:
        logits = logits.diff(dim=1)
        n = min(n, L - 1)
    return logits[:, logits.shape[1] - n :]
