"""MemReward's online reward: predictions become rewards (hard, soft, abstain), no label is ever read,
and the predictor's state (GNN weights, memory) round-trips through a checkpoint."""

from __future__ import annotations

import pytest
import torch

from memrl.data.labels import GroundTruth
from memrl.data.problem import Problem
from memrl.grading import Grader
from memrl.memreward.embed import TextGroup, build_inputs
from memrl.memreward.encoder import TextEncoder
from memrl.memreward.gnn import build_model
from memrl.memreward.predictor import RewardPredictor
from memrl.rewards.base import Group, RewardContext
from memrl.rewards.memreward import ORACLE_NOISE, REWARD_MODELS, MemRewardReward
from memrl.rewards.oracle import OracleNoiseReward
from memrl.rollout.records import Rollout

SPEC = {"kind": "gnn", "in_dim": 384, "feat_dim": 3, "hidden": 16, "heads": 2, "layers": 2, "dropout": 0.0}


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def _memory(encoder):
    groups = [
        TextGroup(
            f"Compute {a} + {b}.",
            "math",
            ["add", "add"],
            [f"\\boxed{{{a + b}}}", f"\\boxed{{{a + b + 1}}}"],
            [True, False],
        )
        for a, b in [(1, 2), (3, 4), (2, 2)]
    ]
    return build_inputs(encoder, groups, labelled=True)


def _predictor(encoder, seed=0):
    torch.manual_seed(seed)
    model = build_model("gnn", 384, 3, 16, 2, 2, 0.0)
    return RewardPredictor(model, dict(SPEC), _memory(encoder), encoder, k=2, direction="memory_to_query", think_k=0)


class _Sealed(GroundTruth):
    """A label store that fails the test on any read of an unlabelled query's answer, metrics included; the
    diagnostic oracle's reads only with `oracle_allowed`."""

    oracle_allowed = False

    def metrics_answer(self, problem_id):
        raise AssertionError(f"the reward path read the hidden ground truth of {problem_id}")

    def oracle_answer(self, problem_id):
        if not self.oracle_allowed:
            raise AssertionError(f"a reward that is no oracle arm read the ground truth of {problem_id}")
        return super().oracle_answer(problem_id)


def _groups():
    problems = [
        Problem("u1", "Compute 5 + 1.", "6"),
        Problem("u2", "Compute 2 + 3.", "5"),
        Problem("l", "Compute 1 + 1.", "2"),
    ]
    texts = [["so \\boxed{6}", "so \\boxed{7}"], ["\\boxed{5}", "\\boxed{5}"], ["\\boxed{2}", "\\boxed{3}"]]
    groups = [
        Group(
            GroundTruth.public(p),
            "prompt",
            [Rollout(0, i, "prompt", t, [1], [2]) for i, t in enumerate(ts)],
            p.id == "l",
        )
        for p, ts in zip(problems, texts)
    ]
    return problems, groups


def _ctx(problems):
    gt = _Sealed(problems, {"l"})
    return gt, RewardContext(gt, Grader(num_workers=0), step=0, max_response_length=32)


def test_unlabelled_groups_get_predicted_hard_rewards_without_reading_labels(encoder):
    problems, groups = _groups()
    gt, ctx = _ctx(problems)
    predictor = _predictor(encoder)
    component = MemRewardReward(predictor, "hard", 0.5)
    component.score(groups, ctx)
    assert gt.reads == set()  # not even the labelled query: GroundTruthReward judges that one
    expected = predictor.predict(
        [
            TextGroup(
                p.question,
                "math",
                ["so", "so"] if p.id == "u1" else ["", ""],
                [r.text.removeprefix("so ") for r in g.rollouts],
            )
            for p, g in zip(problems[:2], groups[:2])
        ]
    )
    for g, ps in zip(groups[:2], expected):
        assert g.extra["gnn_prob"] == pytest.approx(ps)
        assert g.outcome == [float(p > 0.5) for p in ps]
        assert g.score == [float(p > 0.5) for p in ps]
    assert groups[2].outcome == [None, None] and "gnn_prob" not in groups[2].extra
    m = component.metrics(groups)
    assert m["reward/gnn_groups"] == 2.0
    assert m["reward/gnn_pred_right_frac"] == pytest.approx(sum(p > 0.5 for ps in expected for p in ps) / 4)


def test_soft_mode_and_abstain_band(encoder):
    problems, groups = _groups()
    _, ctx = _ctx(problems)
    MemRewardReward(_predictor(encoder), "soft", 0.5).score(groups, ctx)
    for g in groups[:2]:
        assert g.score == pytest.approx(g.extra["gnn_prob"])
        assert g.outcome == [float(p > 0.5) for p in g.extra["gnn_prob"]]
    # a band covering every probability leaves every unlabelled group unjudged (not trained on)
    problems, groups = _groups()
    component = MemRewardReward(_predictor(encoder), "hard", 0.5, (0.0, 1.0))
    component.score(groups, ctx)
    assert all(not g.judged for g in groups[:2]) and all(s == 0.0 for g in groups[:2] for s in g.score)
    assert component.metrics(groups)["reward/gnn_abstained_frac"] == 1.0


def test_predictor_state_round_trips(encoder):
    a, b = _predictor(encoder, seed=0), _predictor(encoder, seed=1)
    groups = [TextGroup("Compute 9 + 1.", "math", ["x", "y"], ["\\boxed{10}", "\\boxed{11}"])]
    assert a.predict(groups) != b.predict(groups)
    state = MemRewardReward(a).state_dict()
    b_component = MemRewardReward(b)
    b_component.load_state_dict(state)
    assert b.predict(groups)[0] == pytest.approx(a.predict(groups)[0], abs=1e-6)
    torch.testing.assert_close(b.memory.query_emb, a.memory.query_emb)
    bad = dict(state["predictor"], graph={"k": 3, "direction": "memory_to_query", "think_k": 0})
    with pytest.raises(ValueError, match="differs"):
        b.load_state_dict(bad)


def test_memory_growth_adds_labelled_groups_and_refreshes(encoder):
    from memrl.config.schema import MemRewardConfig
    from memrl.memreward.training import FitSettings
    from memrl.rewards.memreward import MemoryGrowth

    val_groups = [TextGroup("Compute 4 + 4.", "math", ["a", "b"], ["\\boxed{8}", "\\boxed{9}"])]
    growth = MemoryGrowth(
        2,
        build_inputs(encoder, val_groups, False),
        torch.tensor([1.0, 0.0]),
        FitSettings(MemRewardConfig(), max_epochs=5, lr=0.05, min_epochs=0),
    )
    predictor = _predictor(encoder)
    component = MemRewardReward(predictor, growth=growth)
    before = {k: v.clone() for k, v in predictor.model.state_dict().items()}
    problems, groups = _groups()
    gt, _ = _ctx(problems)
    groups[2].outcome = [1.0, 0.0]  # as GroundTruthReward leaves the labelled group
    component.score(groups, RewardContext(gt, Grader(num_workers=0), step=1, max_response_length=32))
    assert predictor.memory.num_rollouts == 8 and predictor.memory.num_queries == 4
    assert predictor.memory.rollout_label[-2:].tolist() == [1.0, 0.0]
    assert bool(predictor.memory.query_labelled[-1]) and component.refreshes == []
    assert all(torch.equal(v, predictor.model.state_dict()[k]) for k, v in before.items())
    # step 2: a refresh is due before this step's predictions; the memory grows again after it
    component.score(groups, RewardContext(gt, Grader(num_workers=0), step=2, max_response_length=32))
    assert [r["step"] for r in component.refreshes] == [2]
    assert any(not torch.equal(v, predictor.model.state_dict()[k]) for k, v in before.items())
    assert predictor.memory.num_rollouts == 10
    assert component.metrics(groups)["reward/gnn_memory_rollouts"] == 10.0
    # the grown memory and the counters round-trip through a checkpoint
    other = MemRewardReward(_predictor(encoder, seed=3), growth=growth)
    other.load_state_dict(component.state_dict())
    assert other.predictor.memory.num_rollouts == 10 and other.last_refresh_step == 2 and other.grown_rollouts == 4


@pytest.mark.parametrize("kind", REWARD_MODELS)
def test_only_the_oracle_arm_reads_unlabelled_ground_truth(encoder, kind):
    """Every online reward model scores unlabelled groups without any label read, except the diagnostic
    oracle_noise arm, which is excluded here by name and flag and whose reads are counted apart."""
    problems, groups = _groups()
    gt, ctx = _ctx(problems)
    if kind == ORACLE_NOISE:
        gt.oracle_allowed = True
        component = OracleNoiseReward(0.0, 0.0, seed=0)
        assert component.reads_unlabelled_ground_truth
        component.score(groups, ctx)
        assert gt.reads == set() and gt.oracle_reads == {"u1", "u2"}
        assert [g.outcome for g in groups[:2]] == [[1.0, 0.0], [1.0, 1.0]]  # the truth, no noise
        return
    torch.manual_seed(0)
    model = build_model(kind, 384, 3, 16, 2, 2, 0.0)
    predictor = RewardPredictor(
        model, dict(SPEC, kind=kind), _memory(encoder), encoder, k=2, direction="memory_to_query", think_k=0
    )
    component = MemRewardReward(predictor, "hard", 0.5)
    assert not getattr(component, "reads_unlabelled_ground_truth", False)
    component.score(groups, ctx)
    assert gt.reads == set() and gt.oracle_reads == set()
    assert all(g.judged for g in groups[:2])


def test_oracle_noise_arm_needs_no_warmup_and_checks_its_rates(compose_eval):
    from memrl.errors import UserError
    from memrl.rewards.registry import BuildContext, build_reward_pipeline, check_reward_config

    def no_warmup():
        raise AssertionError("the oracle arm ran the warm-up")

    cfg = compose_eval(
        "reward=memreward",
        "reward.memreward.reward_model=oracle_noise",
        "reward.memreward.oracle_noise.fpr=0.2",
        "reward.memreward.oracle_noise.fnr=0.05",
        config_name="train",
    )
    check_reward_config(cfg)
    pipeline = build_reward_pipeline(cfg, BuildContext(warmup=no_warmup))
    assert [c.name for c in pipeline.components] == ["ground_truth", "oracle_noise"]
    oracle = pipeline.components[1]
    assert (oracle.fpr, oracle.fnr, oracle.seed) == (0.2, 0.05, 42)
    bad = compose_eval("reward=memreward", "reward.memreward.oracle_noise.fnr=1.5", config_name="train")
    with pytest.raises(UserError, match=r"reward.memreward.oracle_noise.fnr must be in \[0, 1\], got 1.5"):
        check_reward_config(bad)
    bad = compose_eval("reward=memreward", "reward.memreward.reward_model=gnn2", config_name="train")
    with pytest.raises(UserError, match="valid: gnn, homogeneous, no_think, mlp, oracle_noise"):
        check_reward_config(bad)
