"""Training with validation checks, best-weight copies and restart selection.

Most tests use `OffsetModel`, logit_r = b + c_r with one learnable scalar b and fixed offsets c, so the
validation metrics at each value of b can be read off by hand: rollout r is predicted positive when
b + c_r > 0 (sigmoid > 0.5).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memrl.config.schema import GNNConfig, MemRewardConfig
from memrl.errors import UserError
from memrl.memreward.gnn import MODEL_KINDS, RewardGNN, build_model
from memrl.memreward.graph import ANSWER, EDGE_TYPES, GraphInputs, build_graph
from memrl.memreward.metrics import binary_metrics
from memrl.memreward.training import FIELDS, FitSettings, fit, predict_proba

D = 16


def released(**settings) -> FitSettings:
    """fit's settings: the schema's reward.memreward defaults without its epoch floor (min_epochs 0, as in the
    released pipeline), and `settings` on top."""
    return FitSettings(MemRewardConfig(), **{"min_epochs": 0, **settings})


def test_settings_read_the_memreward_group():
    mr = MemRewardConfig(gnn=GNNConfig(lr=0.02, max_epochs=30, min_epochs=10, restarts=3, seed=5), threshold=0.6)
    s = FitSettings(mr)
    assert {f: getattr(s, f) for f in FIELDS} == {
        "lr": 0.02, "max_epochs": 30, "eval_every": 5, "patience": 4, "min_epochs": 10, "restarts": 3,
        "select_by": "fpr", "seed": 5, "threshold": 0.6,
    }  # fmt: skip
    mr.gnn.patience = 9  # a view, not a copy
    assert s.patience == 9
    refresh = FitSettings(mr, max_epochs=20, min_epochs=0, restarts=1)
    assert (refresh.max_epochs, refresh.min_epochs, refresh.restarts, refresh.lr) == (20, 0, 1, 0.02)
    with pytest.raises(TypeError, match=r"unknown settings \['epochs'\]; valid: lr, max_epochs"):
        FitSettings(mr, epochs=3)


def test_settings_from_the_composed_config(compose_eval):
    from memrl.memreward.artifacts import fit_settings

    cfg = compose_eval("reward=memreward", "reward.memreward.gnn.select_by=f1", config_name="train")
    s = fit_settings(cfg)
    assert (s.select_by, s.min_epochs, s.max_epochs, s.threshold) == ("f1", 100, 150, 0.5)


def make_inputs(num_queries: int, per_query: int, labels: Tensor | None, labelled=None, seed: int = 0) -> GraphInputs:
    g = torch.Generator().manual_seed(seed)
    r = num_queries * per_query
    labelled = torch.ones(num_queries, dtype=torch.bool) if labelled is None else torch.tensor(labelled)
    return GraphInputs(
        query_emb=torch.randn(num_queries, D, generator=g),
        think_emb=torch.randn(r, D, generator=g),
        answer_emb=torch.randn(r, D, generator=g),
        answer_feat=torch.rand(r, 3, generator=g),
        rollout_query=torch.arange(num_queries).repeat_interleave(per_query),
        query_labelled=labelled,
        rollout_label=labels,
    )


class OffsetModel(nn.Module):
    """logits = b + c: one learnable scalar b over fixed per-rollout offsets c [R]."""

    def __init__(self, b: float, c: Tensor) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.tensor(float(b)))
        self.register_buffer("c", c.clone())

    def forward(self, data) -> Tensor:
        return self.b + self.c


# 8 training rollouts labelled 1 at offset 0 push b up from -2 at about lr per epoch; the 4 validation
# rollouts turn positive in order of their offsets: the two positives first (F1 rises to 1), then the two
# negatives (F1 falls again)
TRAIN, VAL = torch.arange(12) < 8, torch.arange(12) >= 8
OFFSETS = torch.tensor([0.0] * 8 + [1.2, 0.7, -0.3, -1.3])
LABELS = torch.tensor([1.0] * 8 + [1.0, 1.0, 0.0, 0.0])


@pytest.fixture
def offset_graph():
    return build_graph(make_inputs(3, 4, LABELS), k=1)


def rising_then_falling(graph, **settings):
    s = released(**settings) if settings else released(lr=0.1, max_epochs=60, eval_every=5, patience=100)
    return fit(lambda: OffsetModel(-2.0, OFFSETS), graph, TRAIN, VAL, s)


def test_reward_gnn_overfits_a_small_graph():
    g = torch.Generator().manual_seed(3)
    labels = (torch.rand(24, generator=g) < 0.5).float()  # 6 queries x 4 rollouts, random labels
    graph = build_graph(make_inputs(6, 4, labels), k=2)
    every = torch.ones(24, dtype=torch.bool)
    settings = released(lr=1e-2, max_epochs=200, eval_every=10, patience=50)
    result = fit(lambda: RewardGNN(D, 3, 32, 2, dropout=0.0), graph, every, every, settings)
    metrics = binary_metrics(predict_proba(result.model, graph), labels)
    assert metrics["accuracy"] >= 0.95
    assert metrics["f1"] == result.val_metrics["f1"]  # validation = training here
    assert result.history[0]["loss"] > result.history[-1]["loss"]


def test_best_weights_are_a_real_copy_of_the_best_check(offset_graph):
    result = rising_then_falling(offset_graph)
    f1s = [row["val_f1"] for row in result.history]
    assert max(f1s) == 1.0 and f1s[-1] < 1.0  # the scenario: F1 rises to 1, then falls
    first_best = next(row["epoch"] for row in result.history if row["val_f1"] == 1.0)
    assert f1s.count(1.0) > 1  # a tie at the top: the first check wins
    assert result.best_epoch == first_best
    assert result.history[-1]["epoch"] == 60  # patience never ran out
    # the returned model scores F1 = 1 again: its weights are the best check's, not the last epoch's
    prob = predict_proba(result.model, offset_graph)
    assert binary_metrics(prob[VAL], LABELS[VAL]) == result.val_metrics
    assert result.val_metrics["f1"] == 1.0
    # training is deterministic, so stopping at the best epoch reproduces the weights exactly ...
    at_best = rising_then_falling(offset_graph, lr=0.1, max_epochs=first_best, eval_every=5, patience=100)
    assert torch.equal(result.model.b, at_best.model.b)
    # ... and they differ from the last epoch's (a shallow state_dict copy would give those)
    last = fit(
        lambda: OffsetModel(-2.0, OFFSETS),
        offset_graph,
        TRAIN,
        torch.zeros(12, dtype=torch.bool),  # no validation: the last weights
        released(lr=0.1, max_epochs=60, eval_every=5),
    )
    assert last.model.b.item() > result.model.b.item() + 1.0


def test_early_stop_after_patience_checks(offset_graph):
    steps = []
    settings = released(lr=0.1, max_epochs=60, eval_every=5, patience=2)
    result = fit(lambda: OffsetModel(-2.0, OFFSETS), offset_graph, TRAIN, VAL, settings, progress=steps.append)
    f1s = [row["val_f1"] for row in result.history]
    best = f1s.index(max(f1s))
    assert len(f1s) == best + 3  # two checks without improvement after the best, then stop
    assert result.restarts[0]["epochs"] == 5 * len(f1s) < 60
    assert sum(steps) == 60  # progress is advanced over the skipped epochs too


def test_no_early_stop_before_min_epochs(offset_graph):
    stopped = fit(
        lambda: OffsetModel(-2.0, OFFSETS), offset_graph, TRAIN, VAL, released(lr=0.1, max_epochs=60, patience=2)
    )
    settings = released(lr=0.1, max_epochs=60, eval_every=5, patience=2, min_epochs=45)
    result = fit(lambda: OffsetModel(-2.0, OFFSETS), offset_graph, TRAIN, VAL, settings)
    assert stopped.restarts[0]["epochs"] < 45
    # the same run goes on to epoch 45 at least; the stale checks are counted all along, so it stops there
    assert result.restarts[0]["epochs"] == 45
    assert result.best_epoch == stopped.best_epoch


def test_without_validation_the_last_weights_are_kept(offset_graph):
    settings = released(lr=0.1, max_epochs=12, eval_every=5)
    result = fit(lambda: OffsetModel(-2.0, OFFSETS), offset_graph, TRAIN, torch.zeros(12, dtype=torch.bool), settings)
    assert result.best_epoch == 12 and result.val_metrics == {}
    assert [row["epoch"] for row in result.history] == [5, 10, 12]  # the last epoch is always checked
    assert all(set(row) == {"restart", "epoch", "loss"} for row in result.history)
    # the same 12 Adam steps by hand
    b = nn.Parameter(torch.tensor(-2.0))
    opt = torch.optim.Adam([b], lr=0.1)
    for _ in range(12):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits((b + OFFSETS)[TRAIN], LABELS[TRAIN]).backward()
        opt.step()
    assert torch.equal(result.model.b.detach(), b.detach())


# validation offsets [2, 1, 0, -1, -2], labels [1, 1, 0, 1, 0]; with b fixed (lr = 0):
#   b = 0.5: predicted 2, 1, 0        TP 2, FP 1, FN 1, TN 1: fpr 1/2, F1 2/3
#   b = -1.5: predicted 2             TP 1, FP 0, FN 2, TN 2: fpr 0,   F1 1/2
#   b = 1.5: predicted 2, 1, 0, -1    TP 3, FP 1, FN 0, TN 1: fpr 1/2, F1 6/7
#   b = -0.5: predicted 2, 1          TP 2, FP 0, FN 1, TN 2: fpr 0,   F1 4/5
RESTART_B = [0.5, -1.5, 1.5, -0.5]
SEL_OFFSETS = torch.tensor([0.0] * 7 + [2.0, 1.0, 0.0, -1.0, -2.0])
SEL_LABELS = torch.tensor([1.0] * 7 + [1.0, 1.0, 0.0, 1.0, 0.0])
SEL_TRAIN, SEL_VAL = torch.arange(12) < 7, torch.arange(12) >= 7


def fixed_restarts(select_by: str):
    graph = build_graph(make_inputs(3, 4, SEL_LABELS), k=1)
    seeds = []

    def make_model():
        seeds.append(torch.initial_seed())
        return OffsetModel(RESTART_B[len(seeds) - 1], SEL_OFFSETS)

    settings = released(lr=0.0, max_epochs=10, eval_every=5, restarts=4, select_by=select_by, seed=7)
    return fit(make_model, graph, SEL_TRAIN, SEL_VAL, settings), seeds


def test_restart_with_the_lowest_fpr_wins_ties_by_f1():
    result, seeds = fixed_restarts("fpr")
    assert seeds == [7, 8, 9, 10]  # restart r is seeded with seed + r
    assert [(r["val_fpr"], r["val_f1"]) for r in result.restarts] == [
        (0.5, round(2 / 3, 4)),
        (0.0, 0.5),
        (0.5, round(6 / 7, 4)),
        (0.0, 0.8),
    ]
    assert result.restart_index == 3  # fpr 0 twice: the higher F1
    assert result.model.b.item() == -0.5
    assert result.val_metrics["fpr"] == 0.0 and result.val_metrics["f1"] == 0.8
    assert all(r["best_epoch"] == 5 for r in result.restarts)  # constant F1: the first check stays best
    assert [row["restart"] for row in result.history] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_restart_with_the_highest_f1_wins_with_select_by_f1():
    result, _ = fixed_restarts("f1")
    assert result.restart_index == 2 and result.model.b.item() == 1.5
    assert result.val_metrics["f1"] == round(6 / 7, 4)


def test_restarts_of_a_gnn_differ_and_the_selection_follows_the_summary():
    g = torch.Generator().manual_seed(5)
    labels = (torch.rand(32, generator=g) < 0.5).float()
    graph = build_graph(make_inputs(8, 4, labels), k=2)
    train = torch.arange(32) < 20
    settings = released(lr=1e-2, max_epochs=20, eval_every=5, patience=2, restarts=3)
    result = fit(lambda: RewardGNN(D, 3, 16, 2), graph, train, ~train, settings)
    losses = {row["loss"] for row in result.history if row["epoch"] == 5}
    assert len(losses) == 3  # different seeds, different runs
    key = [(r["val_fpr"], -r["val_f1"]) for r in result.restarts]
    assert result.restart_index == key.index(min(key))
    chosen = result.restarts[result.restart_index]
    assert result.best_epoch == chosen["best_epoch"]
    assert result.val_metrics["f1"] == chosen["val_f1"] and result.val_metrics["fpr"] == chosen["val_fpr"]
    prob = predict_proba(result.model, graph)
    assert binary_metrics(prob[~train], labels[~train]) == result.val_metrics


def test_predict_proba(offset_graph):
    model = RewardGNN(D, 3, 16, 2)
    model.train()
    prob = predict_proba(model, offset_graph)
    assert prob.shape == (12,) and not prob.requires_grad
    assert ((prob >= 0) & (prob <= 1)).all()
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(prob, torch.sigmoid(model(offset_graph)))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_end_to_end_from_graph_inputs(kind):
    """6 labelled queries (4 train, 2 val) and 2 unlabelled ones, 4 rollouts each, think competition on."""
    labelled = [True] * 6 + [False] * 2
    g = torch.Generator().manual_seed(11)
    label = (torch.rand(32, generator=g) < 0.5).float()
    label[24:] = float("nan")  # the unlabelled queries' rollouts
    graph = build_graph(make_inputs(8, 4, label, labelled=labelled), k=3, think_k=2)
    query = graph[ANSWER].query
    train, val = query < 4, (query >= 4) & (query < 6)
    steps = []

    def make_model():
        return build_model(kind, D, 3, 16, 2, 2, 0.1, EDGE_TYPES if kind == "gnn" else None)

    settings = released(lr=1e-2, max_epochs=15, eval_every=5, restarts=2)
    result = fit(make_model, graph, train, val, settings, progress=steps.append)
    assert sum(steps) == 30
    assert not result.model.training
    assert len(result.restarts) == 2 and result.restart_index in (0, 1)
    assert result.best_epoch in {row["epoch"] for row in result.history if row["restart"] == result.restart_index}
    prob = predict_proba(result.model, graph)
    assert prob.shape == (32,) and torch.isfinite(prob).all()
    assert binary_metrics(prob[val], label[val]) == result.val_metrics
    assert result.val_metrics["n"] == 8


def test_inputs_are_checked(offset_graph):
    make = lambda: OffsetModel(0.0, OFFSETS)  # noqa: E731
    with pytest.raises(UserError, match="unknown restart selection 'auc'; valid: fpr, f1"):
        fit(make, offset_graph, TRAIN, VAL, released(select_by="auc"))
    with pytest.raises(ValueError, match="bool tensor"):
        fit(make, offset_graph, TRAIN.float(), VAL, released())
    with pytest.raises(ValueError, match="selects no answer node"):
        fit(make, offset_graph, torch.zeros(12, dtype=torch.bool), VAL, released())
    offset_graph[ANSWER].y = offset_graph[ANSWER].y.clone()
    offset_graph[ANSWER].y[9] = float("nan")
    with pytest.raises(ValueError, match="val_mask selects answer nodes without a label"):
        fit(make, offset_graph, TRAIN, VAL, released())
    del offset_graph[ANSWER].y
    with pytest.raises(ValueError, match="no labels"):
        fit(make, offset_graph, TRAIN, VAL, released())


def test_fit_leaves_the_callers_random_stream_alone(offset_graph):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    fit(lambda: OffsetModel(-2.0, OFFSETS), offset_graph, TRAIN, VAL, released(lr=0.1, max_epochs=10, restarts=2))
    torch.testing.assert_close(torch.rand(3), expected)
