"""Diversity diagnostics of a training step (logged as `meds/*`)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch


def top1_eigen_ratio(features: torch.Tensor) -> float:
    """Share of the feature covariance's variance on its top eigenvector (the MEDS paper's metric).

    1.0 means every vector varies along one direction (collapsed representations); lower is more diverse.

    Args:
        features: [N, D] feature vectors (N >= 2).

    Returns:
        lambda_max / sum(lambda), or NaN when there are fewer than 2 vectors or no variance.
    """
    if features.shape[0] < 2:
        return float("nan")
    x = features.double() - features.double().mean(dim=0, keepdim=True)
    eig = torch.linalg.eigvalsh(x.T @ x / (x.shape[0] - 1)).clamp_min(0)
    total = eig.sum().item()
    return float(eig.max().item() / total) if total > 0 else float("nan")


def distinct_answers(answers: Sequence[str | None]) -> int:
    """Number of distinct final answers in a group (a missing answer counts as one more answer, None)."""
    return len(set(answers))


class AnswerNovelty:
    """Across steps: the share of a step's answers never produced before for the same prompt.

    Only prompts seen in an earlier step count (a first visit is trivially all new).
    """

    def __init__(self) -> None:
        self.seen: dict[Hashable, set[str | None]] = {}

    def update(self, groups: Sequence[tuple[Hashable, Sequence[str | None]]]) -> float:
        """Record a step's (prompt key, answers) pairs; returns the novelty share on revisited prompts (NaN: none)."""
        new = total = 0
        for key, answers in groups:
            before = self.seen.get(key)
            if before is not None:
                new += sum(a not in before for a in answers)
                total += len(answers)
        for key, answers in groups:
            self.seen.setdefault(key, set()).update(answers)
        return new / total if total else float("nan")

    def state_dict(self) -> dict[str, list]:
        return {"seen": [[k, sorted(v, key=lambda a: (a is None, a or ""))] for k, v in self.seen.items()]}

    def load_state_dict(self, state: dict[str, list]) -> None:
        self.seen = {k: set(v) for k, v in state.get("seen", [])}
