"""Honest label accounting: which training queries reveal their ground truth, and a store that enforces it
(the label store every stage and reward reads through).

A label-limited run (`reward.label_ratio < 1`) may read the gold answer of a labelled query only. The
trainer hands reward components a `GroundTruth` whose `labelled_answer` raises `UnlabelledAccessError`
for any other query, and the `Problem` records components see carry no answer at all (`public`). The
gold answers of unlabelled queries are reachable only through `metrics_answer`, which the trainer calls
after the rewards of a step are final, to log how good the rewards were.

Code problems carry their ground truth in metadata (the benchmark's tests, the reference solution): those
keys (`GROUND_TRUTH_METADATA`) are stripped from the public record too, and read through
`labelled_metadata` / `metrics_metadata` under the same rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence

from memrl.data.problem import Problem

# metadata keys that reveal whether a completion is right (code benchmarks' tests and reference solutions)
GROUND_TRUTH_METADATA = ("test", "test_list", "test_setup_code", "challenge_test_list", "code", "canonical_solution")


class UnlabelledAccessError(RuntimeError):
    """Something in the reward path asked for the ground truth of an unlabelled query."""


def nested_labelled_ids(ids: Sequence[str], ratio: float, seed: int) -> set[str]:
    """The ids whose labels a run may read: the first `round(ratio * N)` ids in a seeded hash order.

    The order depends only on (seed, id), so the sets are nested: every id labelled at ratio 0.1 is also
    labelled at 0.2, 0.3, ... (the paper's ratio sweep), and adding problems does not reshuffle them.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"label_ratio must be in [0, 1], got {ratio}")
    unique = list(dict.fromkeys(ids))
    order = sorted(unique, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).digest())
    return set(order[: round(ratio * len(unique))])


class GroundTruth:
    """Gold answers of the training queries, readable by reward code only where labelled.

    Args:
        problems: the training problems (with their answers).
        labelled: ids whose labels the run may read.
    """

    def __init__(self, problems: Iterable[Problem], labelled: set[str]) -> None:
        problems = list(problems)
        self._answers = {p.id: p.answer for p in problems}
        self._metadata = {p.id: p.metadata for p in problems}
        unknown = set(labelled) - set(self._answers)
        if unknown:
            raise ValueError(f"labelled ids not among the problems: {sorted(unknown)[:5]}")
        self._labelled = frozenset(labelled)
        # every read of a label, by id: the run's label consumption (what honest accounting reports)
        self.reads: set[str] = set()
        # reads by a DIAGNOSTIC oracle arm (oracle_answer), which sees what no method may: counted apart
        self.oracle_reads: set[str] = set()

    @property
    def labelled_ids(self) -> frozenset[str]:
        return self._labelled

    def is_labelled(self, problem_id: str) -> bool:
        return problem_id in self._labelled

    def labelled_answer(self, problem_id: str) -> str | None:
        """The gold answer of a labelled query; raises `UnlabelledAccessError` for any other."""
        if problem_id not in self._labelled:
            raise UnlabelledAccessError(f"the reward path asked for the ground truth of unlabelled query {problem_id}")
        self.reads.add(problem_id)
        return self._answers[problem_id]

    def labelled_metadata(self, problem_id: str) -> dict:
        """The full metadata (tests included) of a labelled query; raises `UnlabelledAccessError` for any other."""
        self.labelled_answer(problem_id)
        return self._metadata[problem_id]

    def oracle_answer(self, problem_id: str) -> str | None:
        """The gold answer of any query, for a DIAGNOSTIC oracle arm only (reward.memreward.reward_model=oracle_noise:
        ground truth with configured errors, the ceiling of a reward model of that quality). Every read is
        recorded in `oracle_reads`, apart from `reads`; no method's reward calls this."""
        self.oracle_reads.add(problem_id)
        return self._answers[problem_id]

    def oracle_metadata(self, problem_id: str) -> dict:
        """The full metadata of any query, for a DIAGNOSTIC oracle arm only (see `oracle_answer`)."""
        self.oracle_reads.add(problem_id)
        return self._metadata[problem_id]

    def metrics_answer(self, problem_id: str) -> str | None:
        """The gold answer of any query, for metrics only (never for rewards, filters or models)."""
        return self._answers[problem_id]

    def metrics_metadata(self, problem_id: str) -> dict:
        """The full metadata of any query, for metrics only."""
        return self._metadata[problem_id]

    @staticmethod
    def public(problem: Problem) -> Problem:
        """The problem as reward code sees it: without its gold answer and without tests or reference code."""
        metadata = {k: v for k, v in (problem.metadata or {}).items() if k not in GROUND_TRUTH_METADATA}
        return dataclasses.replace(problem, answer=None, metadata=metadata)
