"""The trainer's update pass pinned to independent computations, on a bigram language model small enough
that every log-prob, entropy, gradient and Adam step is written out here with plain torch ops.

Covered: metrics averaged over the mini-batches that ran, several PPO epochs, the KL term with a reference
model, entropy_coeff, MEDS' entropy advantage, learning-rate warm-up, micro-batch gradient accumulation
against one large batch, and the skip of a step with a non-finite gradient. The expected values never call
`memrl.rl` code: the objectives below are the formulas of docs/methods.md#grpo-and-dapo / verl written out directly.
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest
import torch

from memrl.data.problem import Problem
from memrl.rewards.base import RewardPipeline
from memrl.rewards.labels import GroundTruth
from memrl.rewards.oracle import GroundTruthReward
from memrl.rl.batch import RolloutBatch
from memrl.rl.trainer import Trainer, TrainSettings

V, P, R = 6, 2, 3


class Bigram(torch.nn.Module):
    """logits(next | token) = W[token] + b: a causal LM with the call signature `forward_batch` uses."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(V, V, generator=g))
        self.b = torch.nn.Parameter(0.5 * torch.randn(V, generator=g))

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **_):
        logits = self.W[input_ids] + self.b
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


# four rows (two groups of two) of 2 prompt + 3 response tokens; response lengths 3, 2, 3, 1
IDS = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 0, 3, 0], [4, 5, 2, 2, 1], [3, 3, 5, 0, 0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
TOKENS = 9.0


def make_batch(advantages, old=None, ref=None) -> RolloutBatch:
    adv = torch.as_tensor(advantages, dtype=torch.float32)
    attention = torch.cat([torch.ones(4, P, dtype=torch.long), MASK.long()], dim=1)
    return RolloutBatch(
        input_ids=IDS.clone(),
        attention_mask=attention,
        position_ids=(attention.cumsum(1) - 1).clamp_min(0),
        response_mask=MASK.clone(),
        group_ids=torch.tensor([0, 0, 1, 1]),
        scores=torch.zeros(4),
        old_log_prob=old,
        ref_log_prob=ref,
        advantages=(adv.unsqueeze(1) if adv.dim() == 1 else adv) * MASK,
    )


def groups(n: int = 2) -> list:
    return [SimpleNamespace(rollouts=[None, None]) for _ in range(n)]


def make_trainer(tmp_path, model=None, ref_model=None, **overrides) -> Trainer:
    settings = TrainSettings(
        train_batch_size=2,
        ppo_mini_batch_size=2,
        micro_batch_size=64,
        max_new_tokens=R,
        lr=0.1,
        weight_decay=0.0,
        grad_clip=1e9,
        clip_ratio_c=3.0,
        progress=False,
        resume="disable",
    )
    for k, v in overrides.items():
        setattr(settings, k, v)
    problems = [Problem("q0", "1 + 1?", "2")]
    return Trainer(
        settings,
        model or Bigram(0),
        SimpleNamespace(pad_token_id=0),
        None,
        RewardPipeline([GroundTruthReward()]),
        GroundTruth(problems, {"q0"}),
        problems,
        lambda p: p.question,
        None,
        tmp_path,
        ref_model=ref_model,
    )


def record_steps(tr: Trainer) -> list[list[torch.Tensor]]:
    """The gradients each optimiser step sees (after clipping, which grad_clip=1e9 turns off)."""
    seen: list[list[torch.Tensor]] = []
    tr.optimizer.register_step_pre_hook(
        lambda *_: seen.append([p.grad.detach().clone() for p in tr.model.parameters()])
    )
    return seen


# ---------------------------------------------------------------------------------------------------
# the independent computation


def logits_of(params) -> torch.Tensor:
    """[4, R, V] logits that score the response tokens: the token before each one, through W and b."""
    W, b = params
    return W[IDS[:, P - 1 : P + R - 1]] + b


def log_probs(params) -> torch.Tensor:
    return torch.log_softmax(logits_of(params), -1).gather(-1, IDS[:, P:].unsqueeze(-1)).squeeze(-1)


def entropy(params) -> torch.Tensor:
    logp = torch.log_softmax(logits_of(params), -1)
    return -(logp.exp() * logp).sum(-1)


def token_mean(x: torch.Tensor) -> torch.Tensor:
    return (x * MASK).sum() / TOKENS


def surrogate(lp, old, adv, low=0.2, high=0.2, c=3.0) -> torch.Tensor:
    """Per-token PPO loss with dual clip, written out: max(-A r, -A clip(r)), then min(., -A c) where A < 0."""
    r = torch.exp(lp - old)
    loss = torch.maximum(-adv * r, -adv * torch.clamp(r, 1 - low, 1 + high))
    return torch.where(adv < 0, torch.minimum(loss, -adv * c), loss)


def on_policy_pg(adv: torch.Tensor):
    """The token-mean PPO loss at ratio exp(logp - logp.detach()) = 1: value -A, gradient -A grad logp."""

    def objective(params):
        lp = log_probs(params)
        return token_mean(-adv * torch.exp(lp - lp.detach()))

    return objective


def grads_of(objective, params) -> list[torch.Tensor]:
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    return list(torch.autograd.grad(objective(leaves), leaves))


def adam(params, grad_steps, lrs, b1=0.9, b2=0.999, eps=1e-8) -> list[torch.Tensor]:
    """Adam (Kingma & Ba, eps outside the bias-corrected root), no weight decay, step by step."""
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, (grads, lr) in enumerate(zip(grad_steps, lrs), start=1):
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat, v_hat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            params[i] = params[i] - lr * m_hat / (v_hat.sqrt() + eps)
    return params


def assert_close(actual, expected, atol=1e-5) -> None:
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a.detach(), e.detach(), atol=atol, rtol=1e-5)


def params_of(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


ADV = [1.0, -1.0, 0.5, -0.5]


# ---------------------------------------------------------------------------------------------------
# tests


def test_entropy_and_kl_metrics_average_over_the_mini_batches_that_ran(tmp_path):
    """Two mini-batches configured, one group trained (dynamic sampling ran short): the second is empty,
    and entropy / KL are the first one's, not half of it."""
    ref = Bigram(1)
    tr = make_trainer(
        tmp_path, ref_model=ref, ppo_mini_batch_size=1, micro_batch_size=1, entropy_coeff=0.01, kl_loss_coef=0.1
    )
    theta0 = params_of(tr.model)
    ref_lp = log_probs(list(ref.parameters())).detach()
    batch = make_batch(ADV, ref=ref_lp)
    out = tr._update(batch, groups(1), n_mini=2)
    # the one mini-batch that ran: rows 0 and 1 (5 tokens), token-mean over them at the initial parameters
    rows = MASK[:2]
    lp0 = log_probs(theta0)[:2].detach()
    h = (entropy(theta0)[:2] * rows).sum() / rows.sum()
    d = ref_lp[:2] - lp0  # k3 = exp(ref - logp) - (ref - logp) - 1
    kl = ((torch.exp(d) - d - 1) * rows).sum() / rows.sum()
    assert out["actor/entropy"] == pytest.approx(h.item(), rel=1e-5)
    assert out["actor/kl_loss"] == pytest.approx(kl.item(), rel=1e-5)
    # pg loss at ratio 1: token-mean of -A = -(1 * 3 - 1 * 2) / 5 = -0.2; loss = pg - 0.01 H + 0.1 KL
    assert out["actor/pg_loss"] == pytest.approx(-0.2, rel=1e-5)
    assert out["actor/loss"] == pytest.approx(-0.2 - 0.01 * h.item() + 0.1 * kl.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_micro_batch_accumulation_equals_one_large_batch(tmp_path, mode):
    """Micro-batches of 1, 3 and 4 rows give the gradient of the whole mini-batch's loss, and the same step."""
    adv = torch.tensor(ADV).unsqueeze(1)
    lengths = MASK.sum(1)
    per_row = {
        "token-mean": lambda x: (x * MASK).sum() / TOKENS,
        "seq-mean-token-mean": lambda x: ((x * MASK).sum(1) / lengths).mean(),
        "seq-mean-token-sum": lambda x: (x * MASK).sum(1).mean(),
        "seq-mean-token-sum-norm": lambda x: ((x * MASK).sum(1) / R).mean(),  # R = max_new_tokens
    }[mode]

    def objective(params):
        lp = log_probs(params)
        return per_row(-adv * torch.exp(lp - lp.detach()))  # on-policy: ratio 1, gradient -A grad logp

    theta0 = params_of(Bigram(0))
    expected = grads_of(objective, theta0)
    after = []
    for micro in (1, 3, 4):
        tr = make_trainer(tmp_path / f"m{micro}", loss_agg_mode=mode, micro_batch_size=micro)
        seen = record_steps(tr)
        tr._update(make_batch(ADV), groups(), n_mini=1)
        assert len(seen) == 1
        assert_close(seen[0], expected, atol=1e-6)
        after.append(params_of(tr.model))
    assert_close(after[0], adam(theta0, [expected], [0.1]), atol=1e-6)
    assert_close(after[1], after[0], atol=1e-6)
    assert_close(after[2], after[0], atol=1e-6)


def test_ppo_epochs_two_reuse_old_log_probs_and_clip_on_the_second(tmp_path):
    """ppo_epochs=2 on one mini-batch: two optimiser steps; the second one's ratio is against the log-probs
    the batch was scored with, so the clip engages (clipfrac > 0) and clipped tokens stop pulling."""
    theta0 = params_of(Bigram(0))
    old = log_probs(theta0).detach()
    adv = torch.tensor(ADV).unsqueeze(1).expand(4, R)
    tr = make_trainer(tmp_path, ppo_epochs=2, lr=0.3)
    seen = record_steps(tr)
    out = tr._update(make_batch(ADV, old=old), groups(), n_mini=1)
    assert len(seen) == 2

    def objective(params):
        return token_mean(surrogate(log_probs(params), old, adv))

    g1 = grads_of(objective, theta0)
    theta1 = adam(theta0, [g1], [0.3])
    g2 = grads_of(objective, theta1)
    assert_close(seen[0], g1, atol=1e-6)
    assert_close(seen[1], g2, atol=1e-5)
    assert_close(params_of(tr.model), adam(theta0, [g1, g2], [0.3, 0.3]), atol=1e-5)
    # clipfrac: 0 in epoch 1 (ratio 1); in epoch 2 the share of counted tokens where the clipped branch won
    r = torch.exp(log_probs(theta1) - old)
    clipped = (-adv * torch.clamp(r, 0.8, 1.2) > -adv * r) & (MASK > 0)
    frac2 = clipped.sum().item() / TOKENS
    assert 0 < frac2 < 1
    assert out["actor/pg_clipfrac"] == pytest.approx(frac2 / 2, abs=1e-6)
    assert out["actor/pg_loss"] == pytest.approx((objective(theta0) + objective(theta1)).item() / 2, rel=1e-5)


@pytest.mark.parametrize("kl_type", ["low_var_kl", "k1", "k3+"])
def test_kl_term_with_a_reference_model(tmp_path, kl_type):
    """loss = pg + kl_loss_coef * token-mean(KL estimate against the reference model's log-probs)."""
    ref = Bigram(1)
    ref_lp = log_probs(list(ref.parameters())).detach()
    theta0 = params_of(Bigram(0))
    adv = torch.tensor(ADV).unsqueeze(1)

    def kl_value(lp):
        d = ref_lp - lp
        return {"low_var_kl": torch.exp(d) - d - 1, "k1": lp - ref_lp, "k3+": torch.exp(d) - d - 1}[kl_type]

    def kl_for_grad(lp):
        if kl_type != "k3+":
            return kl_value(lp)
        k2 = 0.5 * (lp - ref_lp) ** 2  # straight-through: k3's value, k2's gradient
        return k2 - k2.detach() + kl_value(lp).detach()

    def objective(params):
        return on_policy_pg(adv)(params) + 0.25 * token_mean(kl_for_grad(log_probs(params)))

    tr = make_trainer(tmp_path, ref_model=ref, kl_loss_coef=0.25, kl_loss_type=kl_type)
    seen = record_steps(tr)
    out = tr._update(make_batch(ADV, ref=ref_lp), groups(), n_mini=1)
    assert_close(seen[0], grads_of(objective, theta0), atol=1e-6)
    kl = token_mean(kl_value(log_probs(theta0))).item()
    d = ref_lp - log_probs(theta0)
    assert (torch.exp(d) - d - 1 < 10).all()  # k3 is below verl's clamp at 10 here
    assert out["actor/kl_loss"] == pytest.approx(kl, rel=1e-5)
    # pg at ratio 1: token-mean(-A) = -(1*3 - 1*2 + 0.5*3 - 0.5*1) / 9 = -2/9
    assert out["actor/pg_loss"] == pytest.approx(-2 / 9, rel=1e-5)
    assert out["actor/loss"] == pytest.approx(-2 / 9 + 0.25 * kl, rel=1e-5)


def test_entropy_coeff_adds_an_entropy_bonus(tmp_path):
    """loss = pg - entropy_coeff * token-mean(H): the gradient includes the entropy's own gradient."""
    theta0 = params_of(Bigram(0))
    adv = torch.tensor(ADV).unsqueeze(1)

    def objective(params):
        return on_policy_pg(adv)(params) - 0.05 * token_mean(entropy(params))

    tr = make_trainer(tmp_path, entropy_coeff=0.05)
    seen = record_steps(tr)
    out = tr._update(make_batch(ADV), groups(), n_mini=1)
    assert_close(seen[0], grads_of(objective, theta0), atol=1e-6)
    h = token_mean(entropy(theta0)).item()
    assert out["actor/entropy"] == pytest.approx(h, rel=1e-5)
    assert out["actor/loss"] == pytest.approx(-2 / 9 - 0.05 * h, rel=1e-5)
    # without the coefficient the entropy is not even computed, and the gradient is the pg one only
    plain = make_trainer(tmp_path / "plain")
    seen = record_steps(plain)
    assert "actor/entropy" not in plain._update(make_batch(ADV), groups(), n_mini=1)
    assert_close(seen[0], grads_of(on_policy_pg(adv), theta0), atol=1e-6)


def test_entropy_advantage_inside_the_trainer(tmp_path):
    """use_entropy_advantage: A + min(0.4 H.detach(), 0.5 |A|) per counted token, H of the current policy;
    rows 0-1 (|A| = 3) take the entropy bonus, rows 2-3 (|A| = 0.2) are capped at 0.1."""
    theta0 = params_of(Bigram(0))
    advs = [3.0, -3.0, 0.2, -0.2]
    a = torch.tensor(advs).unsqueeze(1).expand(4, R)
    h = entropy(theta0).detach()
    shaped = a + torch.minimum(0.4 * h, 0.5 * a.abs())
    assert (0.4 * h[:2] < 1.5).all() and (0.4 * h[2:] > 0.1).all()  # both branches of the min are used

    tr = make_trainer(tmp_path, use_entropy_advantage=True, entropy_advantage_coef=0.4, entropy_advantage_cap_ratio=0.5)
    seen = record_steps(tr)
    out = tr._update(make_batch(advs), groups(), n_mini=1)
    assert_close(seen[0], grads_of(on_policy_pg(shaped), theta0), atol=1e-6)
    assert out["actor/pg_loss"] == pytest.approx(token_mean(-shaped).item(), rel=1e-5)
    # the plain advantages would give another gradient
    plain = grads_of(on_policy_pg(a), theta0)
    assert not torch.allclose(seen[0][0], plain[0], atol=1e-4)


def test_learning_rate_warm_up(tmp_path):
    """lr_warmup_steps=4, lr 0.01: the RL steps use 0.0025, 0.005, 0.0075, then 0.01 from the fourth on."""
    theta0 = params_of(Bigram(0))
    tr = make_trainer(tmp_path, lr=0.01, lr_warmup_steps=4)
    seen = record_steps(tr)
    lrs = [tr._update(make_batch(ADV), groups(), n_mini=1)["actor/lr"] for _ in range(5)]
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01], rel=1e-9)
    # and the steps really used them: Adam with the recorded gradients at those rates
    assert_close(params_of(tr.model), adam(theta0, seen, [0.0025, 0.005, 0.0075, 0.01, 0.01]), atol=1e-6)
    # the first step alone moves every parameter with a gradient by 0.0025 (Adam's first step is lr * sign(g))
    first = adam(theta0, seen[:1], [0.0025])
    moved = torch.cat([(f - t).abs().flatten() for f, t in zip(first, theta0)])
    assert moved.max().item() == pytest.approx(0.0025, rel=1e-4)


def test_step_with_a_non_finite_gradient_is_skipped(tmp_path, caplog):
    """A NaN advantage on a counted token: no parameter moves, Adam keeps no state, the metric says nan;
    the next clean step is exactly the first step of a trainer that never saw the bad batch."""
    theta0 = params_of(Bigram(0))
    tr = make_trainer(tmp_path)
    bad = make_batch([1.0, math.nan, 0.5, -0.5])
    with caplog.at_level(logging.WARNING, logger="memrl.rl.trainer"):
        out = tr._update(bad, groups(), n_mini=1)
    assert "non-finite gradient norm; optimiser step skipped" in caplog.text
    assert math.isnan(out["actor/grad_norm"])
    assert_close(params_of(tr.model), theta0, atol=0.0)
    assert not tr.optimizer.state  # no moment estimates, no step count
    tr._update(make_batch(ADV), groups(), n_mini=1)
    fresh = make_trainer(tmp_path / "fresh")
    fresh._update(make_batch(ADV), groups(), n_mini=1)
    assert_close(params_of(tr.model), params_of(fresh.model), atol=0.0)
    expected = adam(theta0, [grads_of(on_policy_pg(torch.tensor(ADV).unsqueeze(1)), theta0)], [0.1])
    assert_close(params_of(tr.model), expected, atol=1e-6)
