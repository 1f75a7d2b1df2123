"""Reward components: ground truth on labelled queries only, the overlong penalty, state by name."""

from __future__ import annotations

import pytest

from memrl.data.labels import GroundTruth, UnlabelledAccessError
from memrl.data.problem import Problem
from memrl.grading import Grader
from memrl.rewards.base import Group, RewardComponent, RewardContext, RewardPipeline
from memrl.rewards.oracle import GroundTruthReward, OverlongPenalty
from memrl.rollout.records import Rollout


def _rollout(text: str, n_tokens: int) -> Rollout:
    return Rollout(0, 0, "p", text, token_ids=[1] * n_tokens, prompt_token_ids=[2])


@pytest.fixture
def setup():
    problems = [Problem("a", "Compute 1 + 2.", "3"), Problem("b", "Compute 2 + 2.", "4")]
    gt = GroundTruth(problems, {"a"})
    groups = [
        Group(GroundTruth.public(problems[0]), "p", [_rollout("\\boxed{3}", 10), _rollout("\\boxed{5}", 20)], True),
        Group(GroundTruth.public(problems[1]), "p", [_rollout("\\boxed{4}", 28), _rollout("\\boxed{4}", 32)], False),
    ]
    with Grader(num_workers=0) as grader:
        yield gt, groups, RewardContext(gt, grader, step=0, max_response_length=32)


def test_ground_truth_judges_labelled_groups_only(setup):
    gt, groups, ctx = setup
    GroundTruthReward().score(groups, ctx)
    assert groups[0].outcome == [1.0, 0.0] and groups[0].score == [1.0, 0.0]
    assert groups[1].outcome == [None, None] and groups[1].score == [0.0, 0.0]
    assert gt.reads == {"a"}
    assert groups[1].problem.answer is None
    with pytest.raises(UnlabelledAccessError):
        gt.labelled_answer("b")
    assert gt.metrics_answer("b") == "4"


def test_overlong_penalty_at_buffer_edges(setup):
    _, groups, ctx = setup
    # max 32, buffer 8: no penalty up to 24 tokens, -0.5 at 28, -1 at 32
    OverlongPenalty(buffer_length=8, penalty_factor=1.0).score(groups, ctx)
    assert groups[0].extra["overlong_penalty"] == [0.0, 0.0]
    assert groups[1].extra["overlong_penalty"] == [-0.5, -1.0]
    assert groups[1].score == [-0.5, -1.0]


def test_pipeline_order_state_and_metrics(setup):
    _, groups, ctx = setup

    class Counter(RewardComponent):
        name = "counter"

        def __init__(self):
            self.calls = 0

        def score(self, groups, ctx):
            self.calls += 1

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    pipe = RewardPipeline([GroundTruthReward(), OverlongPenalty(8), Counter()])
    pipe.score(groups, ctx)
    assert groups[0].score == [1.0, 0.0]  # 10 and 20 tokens: below the buffer
    assert pipe.metrics(groups)["reward/gt_acc"] == 0.5
    state = pipe.state_dict()
    assert state["counter"] == {"calls": 1}
    fresh = RewardPipeline([GroundTruthReward(), OverlongPenalty(8), Counter()])
    fresh.load_state_dict(state)
    assert fresh.components[2].calls == 1
    with pytest.raises(ValueError, match="distinct names"):
        RewardPipeline([Counter(), Counter()])


def test_code_tests_are_ground_truth_hidden_from_reward_code():
    """A code problem's tests and reference solution are its labels: public records drop them."""
    meta = {"entry_point": "f", "prompt": "def f():", "test": "assert f() == 1", "canonical_solution": "return 1"}
    problems = [
        Problem("c1", "Write f.", None, domain="code", metadata=meta),
        Problem("c2", "Write g.", None, domain="code", metadata=dict(meta)),
    ]
    gt = GroundTruth(problems, {"c1"})
    public = GroundTruth.public(problems[1])
    assert public.metadata == {"entry_point": "f", "prompt": "def f():"}
    assert problems[1].metadata["test"] == "assert f() == 1"  # the original is untouched
    assert gt.labelled_metadata("c1")["test"] == "assert f() == 1" and gt.reads == {"c1"}
    with pytest.raises(UnlabelledAccessError):
        gt.labelled_metadata("c2")
    assert gt.metrics_metadata("c2")["canonical_solution"] == "return 1"
