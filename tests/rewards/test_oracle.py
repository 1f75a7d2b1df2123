"""DAPO's overlong penalty (`memrl.rewards.oracle.overlong_penalty`) against hand-computed values."""

from __future__ import annotations

import pytest

from memrl.rewards.oracle import overlong_penalty

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
# the diagnostic noisy oracle (reward.memreward.reward_model=oracle_noise)


def test_noisy_outcome_flips_below_the_rates():
    from memrl.rewards.oracle import noisy_outcome

    # a right rollout is called wrong when its draw is below fnr; a wrong one right when below fpr
    assert [noisy_outcome(True, d, fpr=0.3, fnr=0.2) for d in (0.1, 0.2, 0.5)] == [0.0, 1.0, 1.0]
    assert [noisy_outcome(False, d, fpr=0.3, fnr=0.2) for d in (0.1, 0.29, 0.3)] == [1.0, 1.0, 0.0]


def _oracle_setup(n_queries: int, right: bool):
    from memrl.data.labels import GroundTruth
    from memrl.data.problem import Problem
    from memrl.rewards.base import Group
    from memrl.rollout.records import Rollout

    problems = [Problem(f"q{i}", f"Compute {i} + 1.", str(i + 1)) for i in range(n_queries)]
    gt = GroundTruth(problems, set())  # nothing labelled: only the oracle arm may read these answers
    groups = [
        Group(
            GroundTruth.public(p),
            "p",
            [Rollout(0, j, "p", f"\\boxed{{{int(p.answer) + (0 if right else 1)}}}", [1], [2]) for j in range(8)],
            False,
        )
        for p in problems
    ]
    return gt, groups


@pytest.mark.parametrize("right, rate", [(False, 0.25), (True, 0.1)])
def test_oracle_noise_flips_the_configured_fraction_deterministically(right, rate):
    """2,000 rollouts, all wrong (then all right): the flipped share is the false-positive (false-negative)
    rate within 4 binomial standard deviations; the draws are a fixed function of (seed, query, step, index)."""
    import math

    from memrl.grading import Grader
    from memrl.rewards.base import RewardContext
    from memrl.rewards.oracle import OracleNoiseReward, flip_draw

    gt, groups = _oracle_setup(250, right)
    component = OracleNoiseReward(fpr=0.25, fnr=0.1, seed=7)
    with Grader(num_workers=0) as grader:
        component.score(groups, RewardContext(gt, grader, step=3, max_response_length=8))
    n = 250 * 8
    flipped = sum(f for g in groups for f in g.extra["oracle_noise_flipped"])
    assert abs(flipped / n - rate) <= 4 * math.sqrt(rate * (1 - rate) / n)
    # exactly the rollouts whose draw is below the rate were flipped
    expected = [flip_draw(7, g.problem.id, 3, i) < rate for g in groups for i in range(8)]
    assert [f for g in groups for f in g.extra["oracle_noise_flipped"]] == expected
    for g in groups:
        assert g.outcome == g.score == g.extra["gnn_prob"]
        assert g.outcome == [float(right != f) for f in g.extra["oracle_noise_flipped"]]
    assert component.metrics(groups)["reward/oracle_noise_flipped_frac"] == flipped / n
    # the reads are the oracle arm's, counted apart from the run's label reads
    assert gt.reads == set() and gt.oracle_reads == {g.problem.id for g in groups}


def test_oracle_noise_without_noise_is_the_truth_and_draws_vary_by_step():
    from memrl.rewards.oracle import flip_draw

    draws = [flip_draw(0, "q", step, 0) for step in range(4)]
    assert len(set(draws)) == 4 and all(0.0 <= d < 1.0 for d in draws)
    assert flip_draw(0, "q", 1, 0) == flip_draw(0, "q", 1, 0) != flip_draw(1, "q", 1, 0)

    from memrl.grading import Grader
    from memrl.rewards.base import RewardContext
    from memrl.rewards.oracle import OracleNoiseReward

    for right in (True, False):
        for rates, expected in [((0.0, 0.0), float(right)), ((1.0, 1.0), float(not right))]:
            gt, groups = _oracle_setup(3, right)
            with Grader(num_workers=0) as grader:
                OracleNoiseReward(*rates, seed=0).score(groups, RewardContext(gt, grader, 0, 8))
            assert all(o == expected for g in groups for o in g.outcome)
    with pytest.raises(ValueError, match="fpr must be in"):
        OracleNoiseReward(1.5, 0.0, 0)
