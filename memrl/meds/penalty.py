"""The MEDS penalty on sequence scores (docs/methods.md#cluster-penalty, the released advantage estimator).

`p(n) = alpha * min(log(n + 1), C)` for a rollout whose cluster of past rollouts has `n` members
(alpha = 0.1, C = 2, so at most beta = alpha * C = 0.2, reached at n >= 7). Applied to the scalar sequence
score before GRPO's group normalisation:

- a wrong rollout (target `wrong` or `both`): `s - p`;
- a right rollout (target `right` or `both`, the released code's option): `s / (1 + p)`, a sign-preserving
  shrink;
- `none`: the memory runs, scores are untouched.
"""

from __future__ import annotations

import math

PENALTY_TARGETS = ("wrong", "right", "both", "none")


def cluster_penalty(size: int, alpha: float = 0.1, cap: float = 2.0) -> float:
    """alpha * min(log(size + 1), cap); 0 for an empty cluster."""
    return float(alpha) * min(math.log(int(size) + 1), float(cap))


def penalty_applies(correct: bool, target: str) -> bool:
    """Whether a rollout of this correctness is shaped under `target`."""
    if target not in PENALTY_TARGETS:
        raise ValueError(f"unknown penalty target {target!r}; valid: {', '.join(PENALTY_TARGETS)}")
    return target in (("right", "both") if correct else ("wrong", "both"))


def penalise(score: float, correct: bool, size: int, target: str, alpha: float = 0.1, cap: float = 2.0) -> float:
    """The shaped score of one rollout.

    Args:
        score: its sequence score (ground truth or predicted reward, plus any overlong penalty).
        correct: the outcome the reward believes in.
        size: its cluster size in its (prompt, correctness) memory.
        target: wrong | right | both | none.
        alpha / cap: the coefficient and the cap C of the log.

    Returns:
        The score after the penalty.
    """
    if not penalty_applies(correct, target):
        return score
    p = cluster_penalty(size, alpha, cap)
    return score / (1.0 + p) if correct else score - p
