"""The penalty against hand computation, for each target."""

from __future__ import annotations

import math

import pytest

from memrl.meds.penalty import cluster_penalty, penalise


def test_cluster_penalty_values():
    assert cluster_penalty(0) == 0.0
    assert cluster_penalty(1) == pytest.approx(0.1 * math.log(2))  # 0.0693
    assert cluster_penalty(6) == pytest.approx(0.1 * math.log(7))  # 0.1946, under the cap
    assert cluster_penalty(7) == pytest.approx(0.2)  # log 8 = 2.08 > C = 2: capped at beta = 0.2
    assert cluster_penalty(1000) == pytest.approx(0.2)
    assert cluster_penalty(3, alpha=0.5, cap=1.0) == pytest.approx(0.5)  # log 4 = 1.386 capped at 1


@pytest.mark.parametrize(
    "target, wrong, right",
    [
        ("wrong", 0.0 - 0.1 * math.log(4), 1.0),
        ("right", 0.0, 1.0 / (1.0 + 0.1 * math.log(4))),
        ("both", 0.0 - 0.1 * math.log(4), 1.0 / (1.0 + 0.1 * math.log(4))),
        ("none", 0.0, 1.0),
    ],
)
def test_penalise_each_target(target, wrong, right):
    assert penalise(0.0, False, 3, target) == pytest.approx(wrong)
    assert penalise(1.0, True, 3, target) == pytest.approx(right)
    # an overlong-penalised wrong score keeps its penalty and gets the cluster's on top
    if target in ("wrong", "both"):
        assert penalise(-0.5, False, 7, target) == pytest.approx(-0.7)
    # a negative right score shrinks towards 0, keeping its sign (the released code's s / (1 - base))
    if target in ("right", "both"):
        assert penalise(-0.4, True, 7, target) == pytest.approx(-0.4 / 1.2)


def test_unknown_target():
    with pytest.raises(ValueError, match="wrong, right, both, none"):
        penalise(0.0, False, 1, "sometimes")
