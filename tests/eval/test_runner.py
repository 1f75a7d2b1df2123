"""Sample-weighted averages across benchmarks."""

import pytest

from memrl.eval.runner import weighted_average


def test_weighted_average_weighs_by_problem_count():
    per = {
        "a": {"n_problems": 30, "greedy_acc": 0.5, "n": 4, "mean@4": 0.25, "pass@k": {1: 0.25, 4: 0.5}},
        "b": {"n_problems": 10, "greedy_acc": 0.1, "n": 4, "mean@4": 0.75, "pass@k": {1: 0.75, 4: 1.0}},
    }
    out = weighted_average(per)
    assert out["n_problems"] == 40
    assert out["greedy_acc"] == pytest.approx((30 * 0.5 + 10 * 0.1) / 40)  # 0.4, not the plain mean 0.3
    assert out["mean@4"] == pytest.approx((30 * 0.25 + 10 * 0.75) / 40)
    assert out["pass@k"] == {1: pytest.approx(0.375), 4: pytest.approx(0.625)}


def test_mixed_sample_counts_report_greedy_only():
    per = {
        "a": {"n_problems": 2, "greedy_acc": 1.0, "n": 4, "pass@k": {1: 0.5}},
        "b": {"n_problems": 2, "greedy_acc": 0.0, "n": 8, "pass@k": {1: 0.5}},
    }
    out = weighted_average(per)
    assert out == {"n_problems": 4, "greedy_acc": 0.5}
