"""The math of GRPO / DAPO / Dr.GRPO as pure functions: advantages, policy loss, KL, aggregation, shaping.

Knob names follow verl (`clip_ratio_low`, `clip_ratio_high`, `clip_ratio_c`, `loss_agg_mode`,
`kl_loss_type`, `norm_adv_by_std_in_grpo`, `overlong_buffer`), so a verl user can carry settings over.
Shapes: `B` sequences (rollouts), `T` response positions; `mask` is 1.0 on response tokens that count in
the loss and 0.0 on padding (and on truncated completions when those are masked).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
# verl's names: k1/k2/k3 are aliases, and a trailing "+" keeps a type's value with k2's gradient (see kl_penalty)
KL_BASE_TYPES = ("low_var_kl", "kl", "mse", "abs", "k1", "k2", "k3")
KL_TYPES = KL_BASE_TYPES + tuple(f"{t}+" for t in KL_BASE_TYPES)


# ---------------------------------------------------------------------------------------------------
# advantages


def grpo_advantages(
    scores: torch.Tensor,
    group_ids: Sequence[int] | torch.Tensor,
    norm_by_std: bool = True,
    eps: float = 1e-6,
    std_tol: float = 1e-6,
) -> torch.Tensor:
    """GRPO outcome advantages: each sequence score minus its group's mean, divided by the group's std.

    As verl's `compute_grpo_outcome_advantage`: the std is the unbiased (Bessel) one, a group of one
    sequence has mean 0 and std 1, and `norm_by_std=False` gives Dr.GRPO's unscaled `s - mean`.
    Unlike verl, a group whose scores are all equal up to rounding (std at most `std_tol` times the
    group's scale max(1, max |s|)) gets exactly zero advantage: the float32 mean of eight 0.7s is one ulp
    off 0.7, and divided by (std + eps) that rounding would become an advantage of about 0.06.

    Args:
        scores: [B] sequence scores (reward plus shaping).
        group_ids: [B] the prompt group of each sequence.
        norm_by_std: divide by (std + eps).
        std_tol: relative spread below which a group counts as all-equal.

    Returns:
        [B] advantages (float32).
    """
    scores = scores.detach().to(torch.float32)
    ids = torch.as_tensor(group_ids)
    adv = torch.empty_like(scores)
    for g in torch.unique(ids):
        idx = (ids == g).nonzero(as_tuple=True)[0]
        s = scores[idx]
        if len(idx) == 1:
            mean, std = torch.zeros(()), torch.ones(())
        else:
            mean, std = s.mean(), s.std(unbiased=True)
            if std <= std_tol * max(1.0, s.abs().max().item()):
                adv[idx] = 0.0
                continue
        adv[idx] = (s - mean) / (std + eps) if norm_by_std else s - mean
    return adv


def entropy_advantage(
    advantages: torch.Tensor, entropy: torch.Tensor, coef: float = 0.4, cap_ratio: float = 0.5
) -> torch.Tensor:
    """The entropy-advantage baseline of MEDS (Cheng et al.): `A + min(coef * H.detach(), |A| * cap_ratio)`.

    The bonus is added whatever the sign of `A` and is capped at half of `|A|`, so it never flips the
    sign of a token's advantage; entropy is detached, so no gradient flows through the bonus.

    Args:
        advantages: [B, T] per-token advantages.
        entropy: [B, T] per-token entropy of the current policy.

    Returns:
        [B, T] shaped advantages.
    """
    bonus = torch.minimum(coef * entropy.detach(), advantages.abs() * cap_ratio)
    return advantages + bonus


# ---------------------------------------------------------------------------------------------------
# aggregation


def agg_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_length: float | None = None,
) -> torch.Tensor:
    """Aggregate a [B, T] per-token loss into a scalar.

    Modes (verl's names):
        token-mean: sum over all tokens / number of tokens (DAPO).
        seq-mean-token-mean: per-sequence token mean, then mean over sequences (GRPO).
        seq-mean-token-sum: per-sequence token sum, then mean over sequences.
        seq-mean-token-sum-norm: per-sequence token sum / `norm_length` (a constant: the configured
            maximum response length), then mean over sequences (Dr.GRPO).

    With gradient accumulation, pass the counts of the whole mini-batch (`num_tokens` response tokens,
    `num_seqs` sequences): each micro-batch then contributes its exact share of the mini-batch's loss, and
    the sum over micro-batches equals the loss computed on the whole mini-batch at once.

    Args:
        loss: [B, T] per-token values.
        mask: [B, T] 1.0 where the token counts.
        mode: one of `LOSS_AGG_MODES`.
        num_tokens: denominator of token-mean (default: `mask.sum()` of this batch).
        num_seqs: number of sequences for the seq-mean modes (default: B).
        norm_length: the constant length of seq-mean-token-sum-norm (default: T).

    Returns:
        A scalar tensor.
    """
    # select, not multiply: a NaN or inf at a masked position (0 * inf = NaN) must not reach the sum
    masked = torch.where(mask.bool(), loss, torch.zeros_like(loss))
    mask = mask.to(loss.dtype)
    if mode == "token-mean":
        denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=loss.dtype)
        return masked.sum() / denom.clamp_min(1.0)
    nseq = loss.shape[0] if num_seqs is None else num_seqs
    seq_sum = masked.sum(dim=-1)
    if mode == "seq-mean-token-mean":
        seq = seq_sum / mask.sum(dim=-1).clamp_min(1.0)
    elif mode == "seq-mean-token-sum":
        seq = seq_sum
    elif mode == "seq-mean-token-sum-norm":
        seq = seq_sum / float(norm_length if norm_length is not None else loss.shape[-1])
    else:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; valid: {', '.join(LOSS_AGG_MODES)}")
    return seq.sum() / max(float(nseq), 1.0)


# ---------------------------------------------------------------------------------------------------
# policy loss


def policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float | None = 3.0,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs: float | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate with separate low / high clip ranges (DAPO's clip-higher) and dual-clip.

    Per token, with ratio r = exp(logp - old_logp):
        l1 = -A r,  l2 = -A clip(r, 1 - clip_ratio_low, 1 + clip_ratio_high),  l = max(l1, l2);
        where A < 0 and dual-clip is on: l = min(l, -A * clip_ratio_c)  (bounds the loss of a very large r).

    Args:
        log_prob: [B, T] log-probs of the current policy (with grad).
        old_log_prob: [B, T] log-probs of the policy that sampled the tokens.
        advantages: [B, T] per-token advantages.
        mask: [B, T].
        clip_ratio_c: dual-clip constant (> 1); None turns dual-clip off.
        loss_agg_mode, agg_kwargs: see `agg_loss`.

    Returns:
        (loss, stats) where stats holds detached `clipfrac` (fraction of tokens where the clipped branch
        won), `clipfrac_lower` (tokens where dual-clip bound the loss) and `approx_kl` (mean of old - new
        log-prob over tokens). Masked positions are replaced by zeros before any arithmetic, so a NaN or
        inf there changes neither the loss nor its gradient.
    """
    keep = mask.bool()
    log_prob, old_log_prob, advantages = (_where(keep, x) for x in (log_prob, old_log_prob, advantages))
    neg_kl = (log_prob - old_log_prob).clamp(-20.0, 20.0)
    ratio = torch.exp(neg_kl)
    l1 = -advantages * ratio
    l2 = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clipped = torch.maximum(l1, l2)
    m = mask.to(clipped.dtype)
    denom = m.sum().clamp_min(1.0)
    stats = {
        "clipfrac": (l2 > l1)[keep].sum().detach() / denom,
        "approx_kl": _where(keep, -neg_kl).sum().detach() / denom,
    }
    if clip_ratio_c is not None:
        if clip_ratio_c <= 1.0:
            raise ValueError(f"clip_ratio_c must be > 1 (or null to turn dual-clip off), got {clip_ratio_c}")
        l3 = -advantages * clip_ratio_c
        dual = torch.minimum(l3, clipped)
        stats["clipfrac_lower"] = ((clipped > l3) & (advantages < 0))[keep].sum().detach() / denom
        per_token = torch.where(advantages < 0, dual, clipped)
    else:
        stats["clipfrac_lower"] = torch.zeros(())
        per_token = clipped
    return agg_loss(per_token, mask, loss_agg_mode, **agg_kwargs), stats


def _where(keep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`x` where `keep`, else 0 (selected, so a NaN or inf outside `keep` reaches neither values nor gradients)."""
    return torch.where(keep, x, torch.zeros_like(x))


# ---------------------------------------------------------------------------------------------------
# KL and entropy


def kl_penalty(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    kl_type: str = "low_var_kl",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of sampled tokens (Schulman's k1 / k2 / k3).

    The names and formulas are verl's `kl_penalty` / `kl_penalty_forward` (verl/trainer/ppo/core_algos.py,
    verl-project/verl at 1dda039, 2026-08-22), with d = logp - ref:
        kl, k1: d;  mse, k2: 0.5 d^2;  abs: |d|;
        low_var_kl, k3: exp(-d) + d - 1, with -d clamped to [-20, 20] and the result to [-10, 10].
    A trailing "+" (k1+, k2+, k3+, low_var_kl+, kl+, mse+, abs+) is verl's straight-through variant: the
    value of the named estimator, the gradient of k2, i.e. `k2 - k2.detach() + value.detach()` (verl's
    docs: "would use straight-through to employ k2 for unbiased gradient estimation, regardless of the kl
    value estimation"; k1 and k3 have the right expectation but a biased gradient, k2 the right gradient).
    verl strips the "+" before computing the value since PR #6058 (7e80ab0); before it every "+" name
    raised NotImplementedError. k2+ equals k2 in value and gradient.

    Args:
        mask: [B, T] 1 where the token counts; elsewhere both inputs are replaced by 0 first, so the value
            there is 0 and a NaN or inf in either input reaches neither the value nor the gradient.

    Returns:
        [B, T] per-token values.
    """
    if mask is not None:
        keep = mask.bool()
        log_prob, ref_log_prob = _where(keep, log_prob), _where(keep, ref_log_prob)
    base = kl_type[:-1] if kl_type.endswith("+") else kl_type
    diff = log_prob - ref_log_prob
    if base in ("kl", "k1"):
        value = diff
    elif base in ("mse", "k2"):
        value = 0.5 * diff.square()
    elif base == "abs":
        value = diff.abs()
    elif base in ("low_var_kl", "k3"):
        kl = (ref_log_prob - log_prob).clamp(-20.0, 20.0)
        value = (torch.exp(kl) - kl - 1.0).clamp(-10.0, 10.0)
    else:
        raise ValueError(f"unknown kl_loss_type {kl_type!r}; valid: {', '.join(KL_TYPES)}")
    if base == kl_type:
        return value
    k2 = 0.5 * diff.square()
    return k2 - k2.detach() + value.detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of [..., V] logits, computed stably in float32: logsumexp(z) - sum(p z)."""
    logits = logits.float()
    p = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[label] per position, in float32. logits [B, T, V], labels [B, T] -> [B, T]."""
    logits = logits.float()
    return torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


# ---------------------------------------------------------------------------------------------------
# reward shaping and filtering


def overlong_penalty(response_length: int, max_response_length: int, buffer_length: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment: 0 up to `max - buffer` tokens, then linear down to `-factor` at `max`.

    penalty = min(-(L - (max - buffer)) / buffer * factor, 0).
    """
    if buffer_length <= 0:
        return 0.0
    expected = max_response_length - buffer_length
    return min(-(response_length - expected) / buffer_length * factor, 0.0)


def mixed_groups(outcomes: Sequence[Sequence[float]]) -> list[bool]:
    """DAPO dynamic sampling: True for groups whose binary outcomes are not all equal (std > 0)."""
    return [len(set(float(x) for x in g)) > 1 for g in outcomes]
