"""Unbiased pass@k (Chen et al. 2021) and mean@n.

pass@k for one problem with n samples of which c are correct is the probability that a random
k-subset of the n samples contains at least one correct one: `1 - C(n-c, k) / C(n, k)`. Averaged over
problems it is an unbiased estimate of pass@k (verl's with-replacement bootstrap is biased low).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from math import comb

import numpy as np

from memrl.errors import UserError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem.

    Args:
        n: samples drawn (n >= 1).
        c: correct samples (0 <= c <= n).
        k: subset size (1 <= k <= n).

    Returns:
        `1 - C(n-c, k) / C(n, k)`, computed as the stable product `1 - prod_{i=n-c+1..n} (1 - k/i)`.

    Raises:
        ValueError: if k > n, or c outside [0, n], or k < 1.
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_exact(n: int, c: int, k: int) -> float:
    """The closed form with exact integer binomials (the reference the stable form is tested against)."""
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, plus n itself when n is not a power of two."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return ks


def validate_ks(ks: Iterable[int], n: int) -> list[int]:
    """Sorted unique ks; every k must satisfy 1 <= k <= n."""
    out = sorted(set(int(k) for k in ks))
    bad = [k for k in out if not 1 <= k <= n]
    if bad:
        raise UserError(f"eval.ks={out} has k values outside 1..n (n={n}): {bad}; pass@k needs k <= n")
    return out


def mean_pass_at_k(correct_counts: Sequence[int], n: int, ks: Sequence[int]) -> dict[int, float]:
    """Average pass@k over problems.

    Args:
        correct_counts: c for each problem (each drew n samples).
        n: samples per problem.
        ks: the k values (each <= n).

    Returns:
        {k: mean over problems of pass@k}; empty input gives NaN.
    """
    if len(correct_counts) == 0:
        return {k: float("nan") for k in ks}
    return {k: float(np.mean([pass_at_k(n, c, k) for c in correct_counts])) for k in ks}


def mean_at_n(correct_counts: Sequence[int], n: int) -> float:
    """mean@n: the average fraction of correct samples per problem (= pass@1 with n samples)."""
    if len(correct_counts) == 0:
        return float("nan")
    return float(np.mean(np.asarray(correct_counts, dtype=float) / n))
