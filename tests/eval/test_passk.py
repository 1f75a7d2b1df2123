"""pass@k against the closed form and against brute-force enumeration of k-subsets."""

from __future__ import annotations

import itertools
import math

import pytest

from memrl.errors import UserError
from memrl.eval.passk import default_ks, mean_at_n, mean_pass_at_k, pass_at_k, pass_at_k_exact, validate_ks


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c of them correct) that contain a correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)
            assert pass_at_k_exact(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def test_pass_at_k_closed_form_large_n():
    # 1 - C(n-c, k) / C(n, k) with exact integers, at n where naive floats would overflow
    for n, c, k in [(128, 3, 64), (200, 1, 1), (200, 50, 100), (64, 0, 32), (64, 64, 1)]:
        expected = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hand_computed_values():
    # n=4, c=1: pass@1 = 1/4, pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5, pass@4 = 1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 4) == 1.0
    # verl's with-replacement bootstrap gives 0.684 for 1-of-4 at k=4 (docs/methods.md#pass-at-k); unbiased is 1.0
    assert pass_at_k(4, 0, 4) == 0.0


def test_k_greater_than_n_is_rejected():
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(UserError, match="k <= n"):
        validate_ks([1, 2, 16], 8)


def test_mean_over_problems_and_mean_at_n():
    counts = [0, 1, 4]
    got = mean_pass_at_k(counts, 4, [1, 2])
    assert got[1] == pytest.approx((0 + 0.25 + 1) / 3)
    assert got[2] == pytest.approx((0 + 0.5 + 1) / 3)
    assert mean_at_n(counts, 4) == pytest.approx(got[1])


def test_default_ks():
    assert default_ks(8) == [1, 2, 4, 8]
    assert default_ks(6) == [1, 2, 4, 6]
    assert default_ks(1) == [1]
    assert default_ks(0) == []
