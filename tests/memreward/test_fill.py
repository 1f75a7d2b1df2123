"""Experience memory: which queries get which role, which labels are read, and the files round trip."""

from __future__ import annotations

import pytest

from memrl.data.labels import GroundTruth, UnlabelledAccessError, nested_labelled_ids
from memrl.data.problem import Problem
from memrl.errors import DataError, UserError
from memrl.grading import Grader
from memrl.memreward.fill import build_memory, plan_memory
from memrl.memreward.memory import ExperienceMemory
from memrl.rollout.records import Rollout, SamplingParams


def _problems(prefix: str, n: int) -> list[Problem]:
    return [Problem(f"{prefix}-{i}", f"Compute {i} + 1.", str(i + 1)) for i in range(n)]


TRAIN = _problems("t", 20)
VAL = _problems("v", 5)
LABELLED = nested_labelled_ids([p.id for p in TRAIN], 0.4, seed=3)


def test_plan_with_a_validation_split_counts_its_labels_as_extra():
    gt = GroundTruth(TRAIN, LABELLED)
    plan = plan_memory(TRAIN, gt, VAL, "split", 0.2, report_queries=5, seed=3)
    assert {p.id for p in plan.train} == LABELLED and len(LABELLED) == 8
    assert [p.id for p in plan.val] == [p.id for p in VAL] and plan.val_labels_extra
    assert len(plan.report) == 5 and not {p.id for p in plan.report} & LABELLED
    # deterministic
    again = plan_memory(TRAIN, gt, VAL, "split", 0.2, report_queries=5, seed=3)
    assert [p.id for p in again.report] == [p.id for p in plan.report]


def test_plan_carving_validation_out_of_the_labelled_budget():
    gt = GroundTruth(TRAIN, LABELLED)
    plan = plan_memory(TRAIN, gt, [], "labelled", 0.25, report_queries=0, seed=3)
    assert len(plan.val) == 2 and len(plan.train) == 6 and not plan.val_labels_extra
    assert {p.id for p in plan.train} | {p.id for p in plan.val} == LABELLED
    assert not {p.id for p in plan.train} & {p.id for p in plan.val}
    assert plan.report == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(val_source="split", val_split=[]), "needs data.val_set"),
        (dict(val_source="labelled", val_fraction=1.0), "val_fraction"),
        (dict(val_source="nope"), "valid: split, labelled"),
    ],
)
def test_plan_errors_name_the_key(kwargs, message):
    args = dict(val_split=VAL, val_source="split", val_fraction=0.2, report_queries=0, seed=0) | kwargs
    with pytest.raises(UserError, match=message):
        plan_memory(TRAIN, GroundTruth(TRAIN, LABELLED), **args)


class EchoEngine:
    """Answers every prompt with `\\boxed{k}` for sample k: right exactly where k equals the gold answer."""

    def generate(self, prompts, params, progress=None):
        return [
            [Rollout(pi, k, p, f"So {k}. \\boxed{{{k}}}", [1, 2, 0], [5], "stop") for k in range(params.n)]
            for pi, p in enumerate(prompts)
        ]


class Tripwire(GroundTruth):
    """A label store that records how each label was read."""

    def __init__(self, *a):
        super().__init__(*a)
        self.metric_reads = set()

    def metrics_answer(self, problem_id):
        self.metric_reads.add(problem_id)
        return super().metrics_answer(problem_id)


def test_build_memory_grades_each_role_with_the_labels_it_may_read(tmp_path):
    gt = Tripwire(TRAIN, LABELLED)
    plan = plan_memory(TRAIN, gt, VAL, "split", 0.2, report_queries=4, seed=3)
    memory = build_memory(plan, EchoEngine(), lambda p: p.question, SamplingParams(n=4), Grader(num_workers=0), gt)
    assert len(memory.queries) == 8 + 5 + 4 and len(memory.rollouts) == 4 * 17
    # labelled answers were read for the train queries only; report queries through the metrics path only
    assert gt.reads == LABELLED
    assert gt.metric_reads == {p.id for p in plan.report}
    for r in memory.rollouts:
        q = memory.queries[r.query]
        gold = int(q.id.split("-")[1]) + 1
        assert r.correct == (r.sample_index == gold)
        assert r.answer == f"\\boxed{{{r.sample_index}}}" and r.think == f"So {r.sample_index}."
    assert [q.role for q in memory.queries] == ["train"] * 8 + ["val"] * 5 + ["report"] * 4
    assert memory.rollout_indices("val") == list(range(32, 52))

    memory.save(tmp_path / "memory", {"seconds": 1.0})
    back = ExperienceMemory.load(tmp_path / "memory")
    assert back == memory
    assert back.summary()["train"] == {"queries": 8, "rollouts": 32, "accuracy": memory.summary()["train"]["accuracy"]}


def test_build_memory_never_reads_an_unlabelled_label_for_training_roles():
    gt = GroundTruth(TRAIN, LABELLED)
    plan = plan_memory(TRAIN, gt, VAL, "split", 0.2, report_queries=0, seed=3)
    plan.train.append(next(p for p in TRAIN if p.id not in LABELLED))  # a bug that would leak a label
    with pytest.raises(UnlabelledAccessError):
        build_memory(plan, EchoEngine(), lambda p: p.question, SamplingParams(n=2), Grader(num_workers=0), gt)


def test_incomplete_memory_is_not_loaded(tmp_path):
    memory = ExperienceMemory([], [])
    memory.save(tmp_path)
    (tmp_path / "done.json").unlink()
    assert not ExperienceMemory.exists(tmp_path)
    with pytest.raises(DataError, match="memrl rollout"):
        ExperienceMemory.load(tmp_path)
