"""GRPO / DAPO / Dr.GRPO formulas of `memrl.rl.core_algos` against hand-computed tensors.

Every expected value is worked out by hand in the comment next to it (reference semantics: verl's
`compute_grpo_outcome_advantage`, `agg_loss`, `compute_policy_loss_vanilla`, `kl_penalty`, DAPO's overlong
buffer); no test re-implements the formula it checks.
"""

from __future__ import annotations

import math

import pytest
import torch

from memrl.rl.core_algos import (
    KL_TYPES,
    LOSS_AGG_MODES,
    agg_loss,
    entropy_advantage,
    entropy_from_logits,
    grpo_advantages,
    kl_penalty,
    mixed_groups,
    overlong_penalty,
    policy_loss,
    token_log_probs,
)

EPS = 1e-6


def close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float32)
    torch.testing.assert_close(actual.detach().float(), expected, atol=atol, rtol=0.0)


# ---------------------------------------------------------------------------------------------------
# grpo_advantages


def test_grpo_two_groups_std_normalised():
    # groups interleaved: g0 = {1, 0} (positions 0, 2), g1 = {2, 4, 6} (positions 1, 3, 4)
    scores = torch.tensor([1.0, 2.0, 0.0, 4.0, 6.0])
    adv = grpo_advantages(scores, [0, 1, 0, 1, 1], norm_by_std=True)
    # g0: mean 0.5; unbiased std = sqrt((0.5^2 + 0.5^2) / (2-1)) = sqrt(0.5) = 0.7071068
    #     1 -> +0.5 / (0.7071068 + 1e-6) = +0.7071058;  0 -> -0.7071058
    # g1: mean 4; unbiased std = sqrt((4 + 0 + 4) / (3-1)) = sqrt(4) = 2
    #     2 -> -2 / (2 + 1e-6) = -0.999999500;  4 -> 0;  6 -> +0.999999500
    expected = [0.5 / (0.7071068 + EPS), -2 / (2 + EPS), -0.5 / (0.7071068 + EPS), 0.0, 2 / (2 + EPS)]
    close(adv, expected, atol=1e-6)
    assert adv.dtype == torch.float32
    # the population std (ddof 0) would give g1 std sqrt(8/3) = 1.633 and +-1.2247: not what we got
    assert abs(adv[4].item() - 1.2247) > 0.2


def test_grpo_two_groups_dr_grpo_unscaled():
    scores = torch.tensor([1.0, 2.0, 0.0, 4.0, 6.0])
    adv = grpo_advantages(scores, [0, 1, 0, 1, 1], norm_by_std=False)
    # s - group mean only: g0 mean 0.5 -> [+0.5, -0.5]; g1 mean 4 -> [-2, 0, +2]
    close(adv, [0.5, -2.0, -0.5, 0.0, 2.0], atol=1e-7)


def test_grpo_group_of_one_has_mean_0_std_1():
    # g0 = {1, 3}: mean 2, unbiased std sqrt((1 + 1) / 1) = 1.4142136 -> -+1 / 1.4142146 = -+0.7071063
    # g1 = {0.7} alone: mean 0, std 1 -> 0.7 / (1 + 1e-6) = 0.6999993 (std on), 0.7 - 0 = 0.7 (std off)
    scores = torch.tensor([1.0, 3.0, 0.7])
    ids = torch.tensor([5, 5, 9])
    close(grpo_advantages(scores, ids), [-1 / (1.4142136 + EPS), 1 / (1.4142136 + EPS), 0.7 / (1 + EPS)], atol=1e-6)
    close(grpo_advantages(scores, ids, norm_by_std=False), [-1.0, 1.0, 0.7], atol=1e-7)


def test_grpo_all_equal_group_gives_zeros():
    # mean 0.5, std 0 -> (0.5 - 0.5) / (0 + 1e-6) = 0 for every member (not NaN); std off: 0 too
    scores = torch.tensor([0.5, 0.5, 0.5, 1.0, 0.0])
    adv = grpo_advantages(scores, [0, 0, 0, 1, 1])
    close(adv[:3], [0.0, 0.0, 0.0], atol=0.0)
    # the other group is untouched by the zero-std one: {1, 0} -> +-0.5 / (sqrt(0.5) + 1e-6)
    close(adv[3:], [0.5 / (0.7071068 + EPS), -0.5 / (0.7071068 + EPS)], atol=1e-6)
    close(grpo_advantages(scores[:3], [0, 0, 0], norm_by_std=False), [0.0, 0.0, 0.0], atol=0.0)


@pytest.mark.parametrize("value", [0.7, 0.1, 0.3, 123.456])
@pytest.mark.parametrize("n", [5, 8, 16])
def test_grpo_all_equal_but_not_representable_gives_exact_zeros(value, n):
    # float32 0.7 * 8 summed and divided by 8 is one ulp off 0.7 (mean - s = 6e-8, std 6.4e-8), which
    # (s - mean) / (std + 1e-6) used to turn into an advantage of 0.056; such a group is all-equal: 0 exactly
    scores = torch.full((n,), value)
    assert grpo_advantages(scores, [0] * n).abs().max().item() == 0.0
    assert grpo_advantages(scores, [0] * n, norm_by_std=False).abs().max().item() == 0.0
    # next to a mixed group {1, 0}, which keeps its +-0.5 / (sqrt(0.5) + 1e-6)
    both = grpo_advantages(torch.cat([scores, torch.tensor([1.0, 0.0])]), [0] * n + [1, 1])
    assert both[:n].abs().max().item() == 0.0
    close(both[n:], [0.5 / (0.7071068 + EPS), -0.5 / (0.7071068 + EPS)], atol=1e-6)


def test_grpo_small_real_spread_is_not_zeroed():
    # {0.7, 0.7, 0.7, 0.701}: mean 0.70025; unbiased std = sqrt((3 * 0.00025^2 + 0.00075^2) / 3) = 0.0005
    # -> (0.7 - 0.70025) / (0.0005 + 1e-6) = -0.4990020, (0.701 - 0.70025) / 0.000501 = +1.4970060
    adv = grpo_advantages(torch.tensor([0.7, 0.7, 0.7, 0.701]), [0, 0, 0, 0])
    close(adv, [-0.4990020, -0.4990020, -0.4990020, 1.4970060], atol=2e-3)
    assert (adv[:3] < -0.49).all() and adv[3] > 1.49


def test_grpo_advantages_carry_no_gradient():
    scores = torch.tensor([1.0, 0.0], requires_grad=True)
    assert not grpo_advantages(scores, [0, 0]).requires_grad


# ---------------------------------------------------------------------------------------------------
# entropy_advantage  (A + min(0.4 * H, |A| / 2))


def test_entropy_advantage_bonus_below_cap():
    # A=2, H=1: bonus min(0.4*1, 2/2) = min(0.4, 1.0) = 0.4 -> 2.4
    # A=1, H=0.5: min(0.2, 0.5) = 0.2 -> 1.2
    adv = torch.tensor([[2.0, 1.0]])
    ent = torch.tensor([[1.0, 0.5]])
    close(entropy_advantage(adv, ent), [[2.4, 1.2]], atol=1e-6)


def test_entropy_advantage_bonus_capped_at_half_abs_advantage():
    # A=0.5, H=2: min(0.8, 0.25) = 0.25 -> 0.75
    # A=0.1, H=5: min(2.0, 0.05) = 0.05 -> 0.15
    # A=0, H=3: min(1.2, 0) = 0 -> 0 (no bonus where there is no signal)
    adv = torch.tensor([[0.5, 0.1, 0.0]])
    ent = torch.tensor([[2.0, 5.0, 3.0]])
    close(entropy_advantage(adv, ent), [[0.75, 0.15, 0.0]], atol=1e-6)


def test_entropy_advantage_negative_advantage_never_flips_sign():
    # bonus is added for A < 0 too, and is at most |A|/2, so A + bonus <= A/2 < 0:
    # A=-1, H=1: min(0.4, 0.5) = 0.4 -> -0.6
    # A=-0.5, H=3: min(1.2, 0.25) = 0.25 -> -0.25 (= A/2, the most it can move)
    # A=-2, H=0: min(0, 1) = 0 -> -2
    adv = torch.tensor([[-1.0, -0.5, -2.0]])
    ent = torch.tensor([[1.0, 3.0, 0.0]])
    out = entropy_advantage(adv, ent)
    close(out, [[-0.6, -0.25, -2.0]], atol=1e-6)
    assert (out < 0).all()


def test_entropy_advantage_custom_coef_and_cap():
    # coef 0.1, cap 1/4: A=1, H=2 -> min(0.2, 0.25) = 0.2 -> 1.2;  A=-0.4, H=2 -> min(0.2, 0.1) = 0.1 -> -0.3
    out = entropy_advantage(torch.tensor([[1.0, -0.4]]), torch.tensor([[2.0, 2.0]]), coef=0.1, cap_ratio=0.25)
    close(out, [[1.2, -0.3]], atol=1e-6)


def test_entropy_advantage_no_gradient_into_entropy():
    ent = torch.tensor([[1.0, 0.2]], requires_grad=True)
    # advantages without grad: the output is entirely outside the autograd graph
    assert not entropy_advantage(torch.tensor([[2.0, 1.0]]), ent).requires_grad
    # advantages with grad: the output has a graph, but no path leads to the entropy
    adv = torch.tensor([[2.0, 1.0]], requires_grad=True)
    out = entropy_advantage(adv, ent)
    (g_ent,) = torch.autograd.grad(out.sum(), [ent], allow_unused=True)
    assert g_ent is None


# ---------------------------------------------------------------------------------------------------
# policy_loss  (old_log_prob = 0, log_prob = log r, so the ratio is exactly the r we pick)


def _logp(ratios) -> torch.Tensor:
    return torch.log(torch.tensor(ratios, dtype=torch.float32))


def _pl(ratios, advs, mask=None, **kw):
    logp = _logp(ratios).requires_grad_(True)
    adv = torch.tensor(advs, dtype=torch.float32)
    m = torch.ones_like(adv) if mask is None else torch.tensor(mask, dtype=torch.float32)
    loss, stats = policy_loss(logp, torch.zeros_like(logp), adv, m, **kw)
    return loss, stats, logp


def test_policy_loss_ratio_inside_clip_range():
    # A=+1, r=1.1: l1 = -1.1, l2 = -1*clip(1.1, 0.8, 1.2) = -1.1 -> -1.1
    # A=-1, r=0.9: l1 = +0.9, l2 = +0.9 -> 0.9;   token-mean = (-1.1 + 0.9) / 2 = -0.1
    loss, stats, _ = _pl([[1.1, 0.9]], [[1.0, -1.0]])
    close(loss, -0.1)
    close(stats["clipfrac"], 0.0, atol=0.0)
    close(stats["clipfrac_lower"], 0.0, atol=0.0)


def test_policy_loss_clip_high_for_positive_advantage():
    # A=+2, r=1.5, clip_high 0.28: l1 = -2*1.5 = -3.0, l2 = -2*1.28 = -2.56; max = -2.56 (clipped at 1.28)
    loss, stats, _ = _pl([[1.5]], [[2.0]], clip_ratio_low=0.2, clip_ratio_high=0.28)
    close(loss, -2.56)
    close(stats["clipfrac"], 1.0, atol=0.0)
    # the same ratio with a negative advantage is not clipped: l1 = 3.0, l2 = 2.56, max = 3.0 (< dual bound 6)
    loss, stats, _ = _pl([[1.5]], [[-2.0]], clip_ratio_low=0.2, clip_ratio_high=0.28)
    close(loss, 3.0)
    close(stats["clipfrac"], 0.0, atol=0.0)


def test_policy_loss_clip_low_for_negative_advantage():
    # A=-1, r=0.5, clip_low 0.2: l1 = 0.5, l2 = 1*clip(0.5, 0.8, 1.2) = 0.8; max = 0.8 (clipped at 0.8)
    loss, stats, _ = _pl([[0.5]], [[-1.0]])
    close(loss, 0.8)
    close(stats["clipfrac"], 1.0, atol=0.0)
    # positive advantage at r=0.5 is not clipped: l1 = -0.5, l2 = -0.8, max = -0.5
    loss, stats, _ = _pl([[0.5]], [[1.0]])
    close(loss, -0.5)
    close(stats["clipfrac"], 0.0, atol=0.0)


def test_policy_loss_asymmetric_low_and_high():
    # clip range [1 - 0.1, 1 + 0.3] = [0.9, 1.3], dual-clip off, one token per column:
    #   A=+1, r=1.5 -> max(-1.5, -1.3) = -1.3   (clipped high at 1.3, not 1.1)
    #   A=+1, r=1.25 -> max(-1.25, -1.25) = -1.25 (inside: 1.25 < 1.3; a symmetric 0.1 would clip to -1.1)
    #   A=-1, r=0.85 -> max(0.85, 0.9) = 0.9     (clipped low at 0.9; a symmetric 0.3 would leave 0.85)
    #   A=-1, r=0.5  -> max(0.5, 0.9) = 0.9
    # token-mean = (-1.3 - 1.25 + 0.9 + 0.9) / 4 = -0.75 / 4 = -0.1875;  clipped 3 of 4 -> clipfrac 0.75
    loss, stats, _ = _pl(
        [[1.5, 1.25, 0.85, 0.5]], [[1.0, 1.0, -1.0, -1.0]], clip_ratio_low=0.1, clip_ratio_high=0.3, clip_ratio_c=None
    )
    close(loss, -0.1875)
    close(stats["clipfrac"], 0.75, atol=1e-7)


def test_policy_loss_dual_clip_active():
    # A=-1, r=5, c=3: l1 = 5, l2 = 1*clip(5, 0.8, 1.2) = 1.2, max = 5; l3 = -(-1)*3 = 3; min(3, 5) = 3 = 3*|A|
    loss, stats, _ = _pl([[5.0]], [[-1.0]], clip_ratio_c=3.0)
    close(loss, 3.0)
    close(stats["clipfrac_lower"], 1.0, atol=0.0)
    close(stats["clipfrac"], 0.0, atol=0.0)  # l2 = 1.2 < l1 = 5: the ordinary clip did not win
    # A=-2, r=5: l1 = 10, l3 = 6 -> 6 = 3*|A|
    loss, _, _ = _pl([[5.0]], [[-2.0]], clip_ratio_c=3.0)
    close(loss, 6.0)
    # dual-clip never touches positive advantages: A=+1, r=5 -> max(-5, -1.2) = -1.2
    loss, stats, _ = _pl([[5.0]], [[1.0]], clip_ratio_c=3.0)
    close(loss, -1.2)
    close(stats["clipfrac_lower"], 0.0, atol=0.0)


def test_policy_loss_dual_clip_off():
    # clip_ratio_c=None: A=-1, r=5 -> max(5, 1.2) = 5, unbounded
    loss, stats, _ = _pl([[5.0]], [[-1.0]], clip_ratio_c=None)
    close(loss, 5.0)
    close(stats["clipfrac_lower"], 0.0, atol=0.0)


def test_policy_loss_rejects_dual_clip_constant_at_most_one():
    with pytest.raises(ValueError, match="clip_ratio_c"):
        _pl([[1.0]], [[1.0]], clip_ratio_c=1.0)


def _stats_batch():
    # row 0: (A=+1, r=1.5) clip-high, (A=+1, r=1.0) inside, (A=-1, r=5) dual-clip
    # row 1: (A=-1, r=0.5) clip-low, then two padded tokens that would clip / dual-clip if they counted
    ratios = [[1.5, 1.0, 5.0], [0.5, 2.0, 4.0]]
    advs = [[1.0, 1.0, -1.0], [-1.0, 1.0, -1.0]]
    mask = [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    return ratios, advs, mask


def test_policy_loss_clipfrac_and_stats_on_masked_batch():
    ratios, advs, mask = _stats_batch()
    loss, stats, _ = _pl(ratios, advs, mask, clip_ratio_c=3.0)
    # per token: -1.2 (clipped high), -1.0, 3.0 (dual-clip: min(3, 5)), 0.8 (clipped low); padding ignored
    # token-mean = (-1.2 - 1.0 + 3.0 + 0.8) / 4 = 1.6 / 4 = 0.4
    close(loss, 0.4)
    # clipfrac: l2 > l1 at (0,0) and (1,0) -> 2 / 4 = 0.5 (the padded (1,1) would make it 3/4)
    close(stats["clipfrac"], 0.5, atol=1e-7)
    # clipfrac_lower: dual-clip bound at (0,2) only -> 1 / 4 = 0.25 (the padded (1,2) would make it 2/4)
    close(stats["clipfrac_lower"], 0.25, atol=1e-7)
    # approx_kl = mean(old - new) = -(ln 1.5 + ln 1 + ln 5 + ln 0.5) / 4 = -ln(3.75) / 4 = -1.3217558 / 4
    close(stats["approx_kl"], -0.33043895, atol=1e-6)
    # same per-token values under seq-mean-token-mean: row 0 (-1.2 - 1.0 + 3.0) / 3 = 0.2666667, row 1 0.8
    # -> (0.2666667 + 0.8) / 2 = 0.5333333
    loss, _, _ = _pl(ratios, advs, mask, clip_ratio_c=3.0, loss_agg_mode="seq-mean-token-mean")
    close(loss, 0.5333333)


def test_policy_loss_gradient_is_zero_where_clipped():
    ratios, advs, mask = _stats_batch()
    loss, _, logp = _pl(ratios, advs, mask, clip_ratio_c=3.0)
    loss.backward()
    # d(-A r)/d log r = -A r, divided by the 4 counted tokens of token-mean.
    # (0,0) clipped high -> 0; (0,1) inside, A=1, r=1 -> -1*1/4 = -0.25; (0,2) dual-clip constant -> 0;
    # (1,0) clipped low -> 0; (1,1), (1,2) padding -> 0
    close(logp.grad, [[0.0, -0.25, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)
    # unclipped tokens on the "wrong" side keep their gradient: A=-2, r=1.5 (loss 3.0 < dual bound 6)
    # and A=+1, r=0.5: grads -(-2)*1.5/2 = 1.5 and -(1)*0.5/2 = -0.25
    loss, _, logp = _pl([[1.5, 0.5]], [[-2.0, 1.0]], clip_ratio_c=3.0)
    loss.backward()
    close(logp.grad, [[1.5, -0.25]], atol=1e-6)
    # dual-clip off: A=-1, r=5 is no longer bounded, so its gradient comes back: -(-1)*5/1 = 5
    loss, _, logp = _pl([[5.0]], [[-1.0]], clip_ratio_c=None)
    loss.backward()
    close(logp.grad, [[5.0]], atol=1e-5)


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_policy_loss_ignores_non_finite_values_at_masked_positions(poison):
    # the batch of _stats_batch with its two padded tokens poisoned in the new and old log-probs and in the
    # advantages: the loss (0.4), the stats and the gradient are those of the clean batch
    ratios, advs, mask = _stats_batch()
    clean, clean_stats, clean_logp = _pl(ratios, advs, mask, clip_ratio_c=3.0)
    clean.backward()
    pad = torch.tensor(mask) == 0
    logp = _logp(ratios).masked_fill(pad, poison).requires_grad_(True)
    old = torch.zeros_like(logp).masked_fill(pad, -poison if poison == poison else poison)
    adv = torch.tensor(advs).masked_fill(pad, poison)
    for mode in LOSS_AGG_MODES:
        loss, stats = policy_loss(logp, old, adv, torch.tensor(mask), clip_ratio_c=3.0, loss_agg_mode=mode)
        assert torch.isfinite(loss)
        if mode == "token-mean":
            close(loss, 0.4)
            for key in ("clipfrac", "clipfrac_lower", "approx_kl"):
                close(stats[key], clean_stats[key].item(), atol=1e-7)
            loss.backward()
            close(logp.grad, clean_logp.grad, atol=1e-7)
            assert torch.isfinite(logp.grad).all()


# ---------------------------------------------------------------------------------------------------
# agg_loss


# two sequences of lengths 3 and 2; the padded position holds 100 so that counting it would show
AGG_LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 6.0, 100.0]])
AGG_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_agg_token_mean():
    # (1 + 2 + 3 + 4 + 6) / 5 tokens = 16 / 5 = 3.2
    close(agg_loss(AGG_LOSS, AGG_MASK, "token-mean"), 3.2)


def test_agg_seq_mean_token_mean():
    # row means 6/3 = 2 and 10/2 = 5 -> (2 + 5) / 2 = 3.5
    close(agg_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-mean"), 3.5)


def test_agg_seq_mean_token_sum():
    # row sums 6 and 10 -> (6 + 10) / 2 = 8
    close(agg_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-sum"), 8.0)


def test_agg_seq_mean_token_sum_norm():
    # norm_length 4: (6/4 + 10/4) / 2 = (1.5 + 2.5) / 2 = 2.0
    close(agg_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-sum-norm", norm_length=4), 2.0)
    # default norm_length = T = 3: (6/3 + 10/3) / 2 = 16/6 = 2.6666667
    close(agg_loss(AGG_LOSS, AGG_MASK, "seq-mean-token-sum-norm"), 2.6666667)


def test_agg_default_mode_is_token_mean():
    close(agg_loss(AGG_LOSS, AGG_MASK), 3.2)


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf])
def test_agg_non_finite_at_masked_position_changes_nothing(poison):
    # the padded 100 of AGG_LOSS becomes NaN / inf: the same values as above (3.2, 3.5, 8, 2.6666667), and
    # the gradient is 1/5 (token-mean) on every counted token and 0 on the padded one, not NaN
    expected = {"token-mean": 3.2, "seq-mean-token-mean": 3.5, "seq-mean-token-sum": 8.0}
    expected["seq-mean-token-sum-norm"] = 16 / 6
    for mode, value in expected.items():
        loss = AGG_LOSS.clone()
        loss[1, 2] = poison
        loss.requires_grad_(True)
        out = agg_loss(loss, AGG_MASK, mode)
        close(out, value, atol=1e-6)
        out.backward()
        assert loss.grad[1, 2].item() == 0.0 and torch.isfinite(loss.grad).all()
        if mode == "token-mean":
            close(loss.grad, AGG_MASK / 5, atol=1e-7)


# four sequences for the micro-batch split
#   r0 [1, 2, 3]        len 3, sum 6,  mean 2
#   r1 [4, 6, (100)]    len 2, sum 10, mean 5
#   r2 [5, (100),(100)] len 1, sum 5,  mean 5
#   r3 [-2, 2, -4]      len 3, sum -4, mean -4/3
# totals: 9 tokens, token sum 17, 4 sequences
BIG_LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 6.0, 100.0], [5.0, 100.0, 100.0], [-2.0, 2.0, -4.0]])
BIG_MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
WHOLE_BATCH = {
    "token-mean": 17 / 9,  # 1.8888889
    "seq-mean-token-mean": (2 + 5 + 5 - 4 / 3) / 4,  # 10.6666667 / 4 = 2.6666667
    "seq-mean-token-sum": 17 / 4,  # (6 + 10 + 5 - 4) / 4 = 4.25
    "seq-mean-token-sum-norm": 17 / 4 / 4,  # norm_length 4: (6 + 10 + 5 - 4) / 4 / 4 = 1.0625
}


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_agg_whole_batch_hand_values(mode):
    close(agg_loss(BIG_LOSS, BIG_MASK, mode, norm_length=4), WHOLE_BATCH[mode], atol=1e-6)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
@pytest.mark.parametrize("split", [2, 1, 3])
def test_agg_micro_batches_sum_to_whole_batch(mode, split):
    # each micro-batch is told the whole batch's counts (9 tokens, 4 sequences); the parts then add up:
    # e.g. split 2, token-mean: (6 + 10) / 9 + (5 - 4) / 9 = 16/9 + 1/9 = 17/9
    #      split 2, seq-mean-token-mean: (2 + 5) / 4 + (5 - 4/3) / 4 = 1.75 + 0.9166667 = 2.6666667
    parts = [(BIG_LOSS[:split], BIG_MASK[:split]), (BIG_LOSS[split:], BIG_MASK[split:])]
    total = sum(agg_loss(lo, ma, mode, num_tokens=9, num_seqs=4, norm_length=4) for lo, ma in parts)
    close(total, WHOLE_BATCH[mode], atol=1e-6)
    close(total, agg_loss(BIG_LOSS, BIG_MASK, mode, norm_length=4), atol=1e-6)


def test_agg_micro_batches_without_whole_counts_do_not_add_up():
    # the reason for num_tokens: per-micro-batch token-means 16/5 = 3.2 and 1/4 = 0.25 average to 1.725,
    # not the whole-batch 17/9 = 1.8889
    a = agg_loss(BIG_LOSS[:2], BIG_MASK[:2], "token-mean")
    b = agg_loss(BIG_LOSS[2:], BIG_MASK[2:], "token-mean")
    close((a + b) / 2, 1.725)


def test_agg_unknown_mode_names_the_valid_ones():
    with pytest.raises(ValueError, match="seq-mean") as err:
        agg_loss(AGG_LOSS, AGG_MASK, "sum")
    for mode in LOSS_AGG_MODES:
        assert mode in str(err.value)
    assert "'sum'" in str(err.value)


# ---------------------------------------------------------------------------------------------------
# kl_penalty


# column 0: logp=-1, ref=-2 (d = logp - ref = +1); column 1: logp=-2, ref=-1 (d = -1); column 2: equal
KL_LOGP = torch.tensor([[-1.0, -2.0, -0.5]])
KL_REF = torch.tensor([[-2.0, -1.0, -0.5]])


def test_kl_k1():
    # k1 = logp - ref = [1, -1, 0]
    close(kl_penalty(KL_LOGP, KL_REF, "kl"), [[1.0, -1.0, 0.0]], atol=1e-7)


def test_kl_k2_mse():
    # k2 = 0.5 * d^2 = [0.5*1, 0.5*1, 0] = [0.5, 0.5, 0]
    close(kl_penalty(KL_LOGP, KL_REF, "mse"), [[0.5, 0.5, 0.0]], atol=1e-7)


def test_kl_abs():
    # |d| = [1, 1, 0]
    close(kl_penalty(KL_LOGP, KL_REF, "abs"), [[1.0, 1.0, 0.0]], atol=1e-7)


def test_kl_k3_low_var():
    # k3 = exp(ref - logp) - (ref - logp) - 1
    #   col 0: ref - logp = -1 -> exp(-1) + 1 - 1 = 0.36787944
    #   col 1: ref - logp = +1 -> exp(1) - 1 - 1 = 2.7182818 - 2 = 0.71828183
    #   col 2: 0 -> 1 - 0 - 1 = 0
    close(kl_penalty(KL_LOGP, KL_REF, "low_var_kl"), [[0.36787944, 0.71828183, 0.0]], atol=1e-6)
    # the default type is low_var_kl
    close(kl_penalty(KL_LOGP, KL_REF), [[0.36787944, 0.71828183, 0.0]], atol=1e-6)


def test_kl_k3_clamped_at_10():
    # ref - logp = +20: exp(20) - 21 = 4.85e8 -> 10
    # ref - logp = +30: inner clamp to 20 first, still -> 10
    # ref - logp = -20: exp(-20) + 20 - 1 = 19.000000002 -> 10
    # ref - logp = +3:  exp(3) - 3 - 1 = 20.0855369 - 4 = 16.0855369 -> 10
    # ref - logp = +2:  exp(2) - 2 - 1 = 7.3890561 - 3 = 4.3890561 (below the clamp, unchanged)
    logp = torch.tensor([[-20.0, -30.0, 0.0, -3.0, -2.0]])
    ref = torch.tensor([[0.0, 0.0, -20.0, 0.0, 0.0]])
    close(kl_penalty(logp, ref, "low_var_kl"), [[10.0, 10.0, 10.0, 10.0, 4.3890561]], atol=1e-5)


def test_kl_verl_aliases_k1_k2_k3():
    # verl's kl_penalty_forward: k1 is kl, k2 is mse, k3 is low_var_kl (hand values of the tests above)
    close(kl_penalty(KL_LOGP, KL_REF, "k1"), [[1.0, -1.0, 0.0]], atol=1e-7)
    close(kl_penalty(KL_LOGP, KL_REF, "k2"), [[0.5, 0.5, 0.0]], atol=1e-7)
    close(kl_penalty(KL_LOGP, KL_REF, "k3"), [[0.36787944, 0.71828183, 0.0]], atol=1e-6)


def _kl_grad(kl_type, logp=KL_LOGP, ref=KL_REF):
    x = logp.clone().requires_grad_(True)
    value = kl_penalty(x, ref, kl_type)
    value.sum().backward()
    return value, x.grad


@pytest.mark.parametrize(
    "name,value",
    [
        ("k1+", [[1.0, -1.0, 0.0]]),
        ("kl+", [[1.0, -1.0, 0.0]]),
        ("k2+", [[0.5, 0.5, 0.0]]),
        ("mse+", [[0.5, 0.5, 0.0]]),
        ("abs+", [[1.0, 1.0, 0.0]]),
        ("k3+", [[0.36787944, 0.71828183, 0.0]]),
        ("low_var_kl+", [[0.36787944, 0.71828183, 0.0]]),
    ],
)
def test_kl_straight_through_plus_keeps_value_takes_k2_gradient(name, value):
    # verl: k2 - k2.detach() + value.detach(): the named estimator's value, k2's gradient d(0.5 d^2)/d logp = d
    # with d = logp - ref = [1, -1, 0] -> gradient [1, -1, 0] whatever the estimator
    v, g = _kl_grad(name)
    close(v, value, atol=1e-6)
    close(g, [[1.0, -1.0, 0.0]], atol=1e-6)


def test_kl_gradients_without_plus_are_the_estimators_own():
    # k1: d(d)/d logp = 1;  abs: sign(d) = [1, -1, 0];  k3: d/d logp [exp(ref - logp) - (ref - logp) - 1]
    #   = 1 - exp(ref - logp) = [1 - e^-1, 1 - e, 0] = [0.6321206, -1.7182818, 0]
    close(_kl_grad("k1")[1], [[1.0, 1.0, 1.0]], atol=1e-7)
    close(_kl_grad("abs")[1], [[1.0, -1.0, 0.0]], atol=1e-7)
    close(_kl_grad("k3")[1], [[0.6321206, -1.7182818, 0.0]], atol=1e-6)
    # past k3's clamp at 10 the estimator has no gradient, k3+ still pulls with d: ref - logp = +3
    # (k3 = 16.09 -> 10): k3 gradient 0, k3+ gradient d = logp - ref = -3
    logp, ref = torch.tensor([[-3.0]]), torch.tensor([[0.0]])
    close(_kl_grad("k3", logp, ref)[1], [[0.0]], atol=1e-7)
    v, g = _kl_grad("k3+", logp, ref)
    close(v, [[10.0]], atol=1e-6)
    close(g, [[-3.0]], atol=1e-6)


@pytest.mark.parametrize("kl_type", KL_TYPES)
def test_kl_mask_keeps_non_finite_reference_out(kl_type):
    # a padded position with ref -inf (or NaN) and logp NaN: 0 there, and no NaN in the gradient
    logp = torch.tensor([[-1.0, math.nan]], requires_grad=True)
    ref = torch.tensor([[-2.0, -math.inf]])
    value = kl_penalty(logp, ref, kl_type, mask=torch.tensor([[1.0, 0.0]]))
    assert value[0, 1].item() == 0.0
    close(value[:, :1], kl_penalty(torch.tensor([[-1.0]]), torch.tensor([[-2.0]]), kl_type), atol=1e-7)
    value.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 1].item() == 0.0


def test_kl_unknown_type_raises():
    with pytest.raises(ValueError, match="low_var_kl") as err:
        kl_penalty(KL_LOGP, KL_REF, "k4")
    for t in KL_TYPES:
        assert t in str(err.value)


# ---------------------------------------------------------------------------------------------------
# entropy_from_logits, token_log_probs


def test_entropy_uniform_is_log_v():
    # uniform over V: H = log V; any constant logit gives the same distribution
    # V=4: log 4 = 1.3862944;  V=8 (all logits 7.0): log 8 = 2.0794415
    close(entropy_from_logits(torch.zeros(2, 4)), [1.3862944, 1.3862944], atol=1e-6)
    close(entropy_from_logits(torch.full((1, 1, 8), 7.0)), [[2.0794415]], atol=1e-6)


def test_entropy_near_one_hot_is_zero():
    # p = [~1, e^-100, e^-100, e^-100]: H ~ 3 * 100 * e^-100 ~ 1e-41 -> 0
    close(entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0, 0.0]])), [0.0], atol=1e-6)


def test_entropy_two_way_hand_value():
    # logits [0, ln 3] -> p = [1/4, 3/4]; H = 0.25 ln 4 + 0.75 ln(4/3) = 0.3465736 + 0.2157616 = 0.5623351
    h = entropy_from_logits(torch.tensor([[0.0, math.log(3.0)]]).to(torch.bfloat16))
    assert h.dtype == torch.float32  # computed in float32 even from bf16 logits
    close(h, [0.5623351], atol=2e-3)  # bf16 rounds ln 3 to 1.09375
    close(entropy_from_logits(torch.tensor([[0.0, math.log(3.0)]])), [0.5623351], atol=1e-6)


def test_token_log_probs_hand_example():
    # position 0: logits [0, 0, 0] -> p = 1/3 each; label 2 -> ln(1/3) = -1.0986123
    # position 1: logits [0, ln 2, ln 5] -> p = [1, 2, 5] / 8; label 1 -> ln(2/8) = -1.3862944
    # row 1, position 0: same logits [0, ln 2, ln 5], label 2 -> ln(5/8) = -0.4700036
    # row 1, position 1: logits [ln 3, 0, 0] + 10 (a shift changes nothing) -> p = [3, 1, 1] / 5; label 0
    #     -> ln(3/5) = -0.5108256
    l2, l3, l5 = math.log(2.0), math.log(3.0), math.log(5.0)
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [0.0, l2, l5]],
            [[0.0, l2, l5], [l3 + 10, 10.0, 10.0]],
        ]
    )
    labels = torch.tensor([[2, 1], [2, 0]])
    out = token_log_probs(logits, labels)
    assert out.shape == (2, 2) and out.dtype == torch.float32
    close(out, [[-1.0986123, -1.3862944], [-0.4700036, -0.5108256]], atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# overlong_penalty (DAPO): max 20, buffer 4 -> the buffer starts at 20 - 4 = 16


def test_overlong_no_penalty_up_to_buffer_start():
    # L <= 16: -(L - 16) / 4 >= 0 -> min(., 0) = 0
    assert overlong_penalty(10, 20, 4) == 0.0
    assert overlong_penalty(16, 20, 4) == 0.0


def test_overlong_linear_inside_buffer():
    # L=18: -(18 - 16) / 4 * 1 = -0.5 (half-way -> -factor/2);  L=17: -1/4 = -0.25
    assert overlong_penalty(18, 20, 4) == pytest.approx(-0.5)
    assert overlong_penalty(17, 20, 4) == pytest.approx(-0.25)
    # factor 0.5: L=18 -> -2/4 * 0.5 = -0.25
    assert overlong_penalty(18, 20, 4, factor=0.5) == pytest.approx(-0.25)
    # MEDS settings (max 3072, buffer 512): L=2816 -> -(2816 - 2560) / 512 = -0.5
    assert overlong_penalty(2816, 3072, 512) == pytest.approx(-0.5)


def test_overlong_full_penalty_at_max():
    # L=20: -(20 - 16) / 4 * factor = -factor
    assert overlong_penalty(20, 20, 4) == pytest.approx(-1.0)
    assert overlong_penalty(20, 20, 4, factor=0.5) == pytest.approx(-0.5)


def test_overlong_buffer_zero_is_off():
    assert overlong_penalty(20, 20, 0) == 0.0
    assert overlong_penalty(25, 20, 0, factor=2.0) == 0.0


# ---------------------------------------------------------------------------------------------------
# mixed_groups (DAPO dynamic sampling on binary outcomes)


def test_mixed_groups():
    groups = [
        [0, 0, 0],  # all wrong -> std 0 -> dropped
        [1, 1, 1, 1],  # all right -> dropped
        [0, 1, 0],  # mixed -> kept
        [1],  # a group of one has std 0 -> dropped
        [1.0, 1],  # int 1 and float 1.0 are the same outcome -> dropped
        [1.0, 0.0],  # mixed floats -> kept
    ]
    assert mixed_groups(groups) == [False, False, True, False, False, True]
