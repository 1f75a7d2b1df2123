"""Fill the experience memory: choose the memory's queries, roll the initial policy out on them, grade.

Which queries (docs/methods.md#experience-memory, and the label accounting of the MemReward issue):

- ``train``: every labelled training query (with `val_source="labelled"`, all but the carved-out share).
- ``val``: with `val_source="split"`, the first `val_limit` queries of `data.val_set`, whose labels are
  extra labels (the released code does this); with `val_source="labelled"`, a seeded `val_fraction` of the
  labelled queries, so the run reads no label beyond its budget.
- ``report``: `report_queries` unlabelled training queries, seeded, whose rollouts measure how well the
  GNN predicts rewards where it will be used. Their ground truth comes from `GroundTruth.metrics_answer`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memrl.data.problem import Problem
from memrl.errors import UserError
from memrl.memreward.memory import ExperienceMemory, MemoryQuery, MemoryRollout
from memrl.rewards.labels import GroundTruth

log = logging.getLogger(__name__)


@dataclass
class MemoryPlan:
    """The queries of each role, and whether the validation labels come on top of the budget."""

    train: list[Problem]
    val: list[Problem]
    report: list[Problem]
    val_labels_extra: bool


def _hash_order(ids: Sequence[str], seed: int) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha256(f"{seed}\x00{i}".encode()).digest())


def plan_memory(
    train_problems: Sequence[Problem],
    ground_truth: GroundTruth,
    val_split: Sequence[Problem],
    val_source: str,
    val_fraction: float,
    report_queries: int,
    seed: int,
) -> MemoryPlan:
    """Choose the memory's queries by role (see the module docstring); deterministic given `seed`."""
    labelled = [p for p in train_problems if ground_truth.is_labelled(p.id)]
    if not labelled:
        raise UserError("MemReward needs labelled queries: raise reward.label_ratio")
    if val_source == "split":
        if not val_split:
            raise UserError(
                "reward.memreward.val_source=split needs data.val_set; or carve validation queries out of the "
                "labelled budget with reward.memreward.val_source=labelled"
            )
        train, val, extra = labelled, list(val_split), True
    elif val_source == "labelled":
        if not 0.0 < val_fraction < 1.0:
            raise UserError(f"reward.memreward.val_fraction must be in (0, 1), got {val_fraction}")
        carved = set(_hash_order([p.id for p in labelled], seed)[: max(1, round(val_fraction * len(labelled)))])
        train = [p for p in labelled if p.id not in carved]
        val = [p for p in labelled if p.id in carved]
        extra = False
        if not train:
            raise UserError("too few labelled queries to carve a validation share out of them: raise label_ratio")
    else:
        raise UserError(f"unknown reward.memreward.val_source={val_source}; valid: split, labelled")
    unlabelled = [p for p in train_problems if not ground_truth.is_labelled(p.id)]
    picked = set(_hash_order([p.id for p in unlabelled], seed + 1)[: max(0, report_queries)])
    report = [p for p in unlabelled if p.id in picked]
    return MemoryPlan(train, val, report, extra)


def build_memory(
    plan: MemoryPlan,
    engine: Any,
    prompt_fn: Callable[[Problem], str],
    params: Any,
    grader: Any,
    ground_truth: GroundTruth,
    progress: Callable[[int], None] | None = None,
) -> ExperienceMemory:
    """Roll the policy out `params.n` times on every planned query and grade the rollouts.

    Labels are read as the roles allow: `labelled_answer` for train (and carved val) queries, the
    validation split's own answers for split val queries, `metrics_answer` for report queries.
    """
    from memrl.grading import GradeItem
    from memrl.rollout.split import split_thinking_answer

    roles = [("train", plan.train), ("val", plan.val), ("report", plan.report)]
    problems = [(role, p) for role, ps in roles for p in ps]
    groups = engine.generate([prompt_fn(p) for _, p in problems], params, progress=progress)

    def gold(role: str, p: Problem) -> tuple[str | None, dict]:
        """(answer, metadata with tests) as the role may read them."""
        if role == "report":
            return ground_truth.metrics_answer(p.id), ground_truth.metrics_metadata(p.id)
        if role == "val" and plan.val_labels_extra:
            return p.answer, p.metadata
        return ground_truth.labelled_answer(p.id), ground_truth.labelled_metadata(p.id)

    items = [GradeItem(p.domain, r.text, *gold(role, p)) for (role, p), group in zip(problems, groups) for r in group]
    results = iter(grader.grade_batch(items))
    queries, rollouts = [], []
    for qi, ((role, p), group) in enumerate(zip(problems, groups)):
        queries.append(MemoryQuery(p.id, role, p.question, p.domain))
        for r in group:
            think, answer, _ = split_thinking_answer(r.text)
            rollouts.append(
                MemoryRollout(
                    qi,
                    r.sample_index,
                    r.text,
                    think,
                    answer,
                    bool(next(results).correct),
                    r.num_tokens,
                    r.finish_reason,
                )
            )
    return ExperienceMemory(queries, rollouts)
