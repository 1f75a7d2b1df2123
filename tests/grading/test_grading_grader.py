"""The Grader: batches, order, domains, worker processes and the hard time limit."""

from __future__ import annotations

import os
import sys
import time
import types
from enum import Enum
from pathlib import Path

import pytest

from memrl.errors import UserError
from memrl.grading import GradeItem, Grader, GradeResult
from memrl.grading.math import judge_math

TIMEOUT_S = 1.0
STUCK = "STUCK:"
CRASH = "CRASH"


def stuck_or_judge(pred: str, gold: str, timeout_s: float) -> tuple[bool, str]:
    """The workers' function in these tests: a gold "STUCK:<file>" writes the pid there and hangs;
    a gold "CRASH" ends the worker process.

    time.sleep ignores math-verify's alarm (none is set here), like sympy stuck in C code: only
    the parent's kill can end it. Module-level, so that spawned workers can import it.
    """
    if gold == CRASH:
        os._exit(3)
    if gold.startswith(STUCK):
        Path(gold[len(STUCK) :]).write_text(str(os.getpid()))
        time.sleep(60)
    return judge_math(pred, gold, timeout_s)


class Domain(str, Enum):
    math = "math"
    choice = "choice"


MIXED = [
    (GradeItem("math", "so \\boxed{18}", "18"), GradeResult(True, "18", "ok")),
    (GradeItem("math", "#### 1,234", "1234"), GradeResult(True, "1,234", "ok")),
    (GradeItem("math", "\\boxed{19}", "18"), GradeResult(False, "19", "ok")),
    (GradeItem("math", "\\boxed{x=3}", "3"), GradeResult(True, "x=3", "ok")),
    (GradeItem("math", "\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}"), GradeResult(True, "\\sqrt{2}/2", "ok")),
    (GradeItem("math", "\\boxed{\\sqrt{2}}", "2"), GradeResult(False, "\\sqrt{2}", "ok")),
    (GradeItem("math", "I think it is 18", "18"), GradeResult(False, None, "no_answer")),
    (
        GradeItem(Domain.math, "\\boxed{\\frac{1}{2}}", "The half: \\boxed{0.5}"),
        GradeResult(True, "\\frac{1}{2}", "ok"),
    ),
    (GradeItem("choice", "The answer is (B).", "B"), GradeResult(True, "B", "ok")),
    (GradeItem(Domain.choice, "\\boxed{c}", "(D)"), GradeResult(False, "C", "ok")),
    (GradeItem("choice", "no idea", "A"), GradeResult(False, None, "no_answer")),
    (GradeItem("choice", "Answer: H", "H", {"letters": "ABCDEFGHIJ"}), GradeResult(True, "H", "ok")),
    (GradeItem("math", "\\boxed{2\\pi}", "2 \\pi"), GradeResult(True, "2\\pi", "ok")),
    (GradeItem("math", "\\boxed{(2,1)}", "(1,2)"), GradeResult(False, "(2,1)", "ok")),
]


@pytest.fixture(scope="module", autouse=True)
def _workers_can_import_this_module():
    """Spawned workers import `stuck_or_judge` by module name; under pytest's importlib mode that
    name starts at the repository root, which is then not on sys.path (workers inherit sys.path)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(Path(__file__).resolve().parents[2]))
        yield


@pytest.fixture(scope="module")
def grader(_workers_can_import_this_module):
    """One pool for the module: two spawned workers running `stuck_or_judge`."""
    with Grader(num_workers=2, timeout_s=TIMEOUT_S, _worker_fn=stuck_or_judge) as g:
        yield g


def test_mixed_batch_in_workers(grader):
    results = grader.grade_batch([item for item, _ in MIXED])
    assert results == [expected for _, expected in MIXED]
    assert grader.worker_starts >= 1


def test_mixed_batch_in_process():
    g = Grader(num_workers=0, timeout_s=5.0)
    assert g.grade_batch([item for item, _ in MIXED]) == [expected for _, expected in MIXED]
    assert g.worker_starts == 0


def test_order_is_preserved(grader):
    # symbolic answers finish in the workers in any order; the results must not
    items = [GradeItem("math", f"\\boxed{{\\frac{{\\sqrt{{{k}}}}}{{2}}}}", f"\\sqrt{{{k % 7}}}/2") for k in range(30)]
    results = grader.grade_batch(items)
    assert [r.correct for r in results] == [k == k % 7 for k in range(30)]
    assert [r.extracted for r in results] == [f"\\frac{{\\sqrt{{{k}}}}}{{2}}" for k in range(30)]


def test_numbers_never_start_a_worker():
    g = Grader(num_workers=2)
    items = [GradeItem("math", f"so \\boxed{{{k:,}}}", f"{k}.0" if k % 3 else str(k + 1)) for k in range(3000)]
    t0 = time.monotonic()
    results = g.grade_batch(items)
    elapsed = time.monotonic() - t0
    assert [r.correct for r in results] == [k % 3 != 0 for k in range(3000)]
    assert all(r.status == "ok" for r in results)
    assert g.worker_starts == 0
    assert elapsed < 5.0  # a few microseconds each; generous for a loaded machine


def test_a_stuck_answer_times_out_and_the_rest_are_graded(grader, tmp_path):
    grader.grade("math", "\\boxed{x=3}", "3")  # workers started before the clock runs
    pid_file = tmp_path / "pid"
    items = [
        GradeItem("math", "\\boxed{x=1}", "1"),
        GradeItem("math", "\\boxed{y}", STUCK + str(pid_file)),
        GradeItem("math", "\\boxed{\\sqrt{4}}", "2"),
        GradeItem("math", "\\boxed{7}", "7.00"),
        GradeItem("math", "\\boxed{\\sqrt{3}}", "3"),
        GradeItem("math", "\\boxed{x=5}", "5"),
    ]
    t0 = time.monotonic()
    results = grader.grade_batch(items)
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT_S + 10  # a hang guard, not a benchmark
    assert elapsed >= TIMEOUT_S  # the stuck answer held its worker until the deadline
    assert [r.status for r in results] == ["ok", "timeout", "ok", "ok", "ok", "ok"]
    assert [r.correct for r in results] == [True, False, True, True, False, True]
    assert results[1].extracted == "y"
    # the stuck worker was killed and reaped, not left behind
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # and a fresh worker takes its place
    assert grader.grade("math", "\\boxed{x=4}", "4") == GradeResult(True, "x=4", "ok")


def test_a_crashed_worker_is_an_error_and_replaced(grader):
    items = [
        GradeItem("math", "\\boxed{x=1}", "1"),
        GradeItem("math", "\\boxed{z}", CRASH),
        GradeItem("math", "\\boxed{x=2}", "2"),
    ]
    results = grader.grade_batch(items)
    assert [(r.correct, r.status) for r in results] == [(True, "ok"), (False, "error"), (True, "ok")]
    assert grader.grade("math", "\\boxed{x=5}", "5").correct is True


def test_a_worker_that_cannot_start_is_a_clear_error():
    # a function the spawned worker cannot import: it dies while starting
    mod = types.ModuleType("memrl_grading_absent_module")
    mod.judge = types.FunctionType(stuck_or_judge.__code__, stuck_or_judge.__globals__, "judge")
    mod.judge.__module__, mod.judge.__qualname__ = mod.__name__, "judge"
    sys.modules[mod.__name__] = mod  # the parent can pickle it by name; the worker cannot import it
    try:
        g = Grader(num_workers=1, _worker_fn=mod.judge)
        assert g.grade("math", "\\boxed{7}", "7.0") == GradeResult(True, "7", "ok")  # no worker needed
        with pytest.raises(RuntimeError, match="died while starting"):
            g.grade("math", "\\boxed{x=7}", "7")
        g.close()
    finally:
        del sys.modules[mod.__name__]


def test_stuck_answers_in_a_single_worker_pool(tmp_path):
    # with one worker, every stuck answer costs a kill and a restart, and nothing waits forever
    with Grader(num_workers=1, timeout_s=TIMEOUT_S, _worker_fn=stuck_or_judge) as g:
        items = [
            GradeItem("math", "\\boxed{a}", STUCK + str(tmp_path / "1")),
            GradeItem("math", "\\boxed{b}", STUCK + str(tmp_path / "2")),
            GradeItem("math", "\\boxed{x=2}", "2"),
        ]
        t0 = time.monotonic()
        results = g.grade_batch(items)
        assert time.monotonic() - t0 < 2 * (TIMEOUT_S + 10)
        assert [(r.correct, r.status) for r in results] == [(False, "timeout"), (False, "timeout"), (True, "ok")]
        assert g.worker_starts == 3


def test_grade_single_and_in_process():
    g = Grader(num_workers=0)
    assert g.grade("math", "\\boxed{\\frac12}", "0.5") == GradeResult(True, "\\frac12", "ok")
    assert g.grade("math", "#### 5", "5") == GradeResult(True, "5", "ok")
    hash_only = Grader(num_workers=0, answer_formats=["hash"])
    assert hash_only.grade("math", "\\boxed{5}", "5") == GradeResult(False, None, "no_answer")


def test_in_process_time_limit():
    # num_workers=0 in the main thread: math-verify's alarm is the limit
    g = Grader(num_workers=0, timeout_s=1.0)
    slow = GradeItem("math", "\\boxed{(x+1)^{30000}-(x-1)^{30000}}", "(x+1)^{30000}-(x-1)^{29999}")
    t0 = time.monotonic()
    results = g.grade_batch([slow, GradeItem("math", "\\boxed{x=2}", "2")])
    assert time.monotonic() - t0 < 10
    assert [(r.correct, r.status) for r in results] == [(False, "timeout"), (True, "ok")]


def test_code_without_tests_is_a_user_error():
    # code is graded by its tests in the sandbox (tests/grading/test_grading_code.py); none is an input error
    with pytest.raises(UserError, match="needs HumanEval fields .* or MBPP fields"):
        Grader(num_workers=0).grade("code", "print(1)", None)


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (GradeItem("poetry", "x", "y"), r"unknown grading domain 'poetry'.*math, choice, code"),
        (GradeItem("math", "\\boxed{1}", None), "no gold answer"),
        (GradeItem("choice", "B", None), "no gold answer"),
        (GradeItem("choice", "B", "banana"), "one letter"),
    ],
)
def test_user_mistakes_are_clear_errors(item, match):
    with pytest.raises(UserError, match=match):
        Grader(num_workers=0).grade_batch([item])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_workers": -1}, "num_workers"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"answer_formats": ["latex"]}, "'latex'.*boxed, hash"),
        ({"answer_formats": []}, "empty"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(UserError, match=match):
        Grader(**kwargs)


def test_worker_function_must_be_importable():
    with pytest.raises(ValueError, match="module-level"):
        Grader(num_workers=1, _worker_fn=lambda p, g, t: (True, "ok"))
