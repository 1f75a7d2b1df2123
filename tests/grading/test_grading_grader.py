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
from memrl.grading import grader as grader_module
from memrl.grading import math as math_module
from memrl.grading.math import judge_math

# the limit in tests of the stuck answers: the other answers there are judged without math-verify
# ("SAME:"), so that no real judgement runs under a limit this tight on a loaded machine
TIMEOUT_S = 1.0
# the limit where math-verify judges for real (a fresh process's first judgements take a second);
# with a fraction, which must reach the workers as it is
SAFE_TIMEOUT_S = 60.25
STUCK = "STUCK:"
SLEEP = "SLEEP:"
SAME = "SAME:"
CRASH = "CRASH"
LIMIT = "LIMIT"
# a hang guard, not a benchmark: on a thread, because the time limits use SIGALRM
HANG_GUARD = pytest.mark.timeout(300, method="thread")


def stuck_or_judge(pred: str, gold: str, timeout_s: float) -> tuple[bool, str]:
    """The workers' function in these tests: a gold "STUCK:<file>" writes the pid there and hangs;
    "SLEEP:<s>" sleeps that long and is right; "SAME:<text>" is right when the answer is that text;
    "CRASH" ends the worker process; "LIMIT" reports the time limit the worker was given (as its
    status); other golds are judged by `judge_math`.

    time.sleep ignores the alarm (none is set here), like sympy stuck in C code: only the parent's
    kill can end it. Module-level, so that spawned workers can import it.
    """
    if gold == CRASH:
        os._exit(3)
    if gold == LIMIT:
        return False, f"limit={timeout_s!r}"
    if gold.startswith(STUCK):
        Path(gold[len(STUCK) :]).write_text(str(os.getpid()))
        time.sleep(60)
    if gold.startswith(SLEEP):
        time.sleep(float(gold[len(SLEEP) :]))
        return True, "ok"
    if gold.startswith(SAME):
        return pred == gold[len(SAME) :], "ok"
    return judge_math(pred, gold, timeout_s)


def same(k: int, right: bool = True) -> GradeItem:
    """An answer that goes to a worker and is judged there at once (no math-verify)."""
    return GradeItem("math", f"\\boxed{{a{k}}}", f"{SAME}{'a' if right else 'b'}{k}")


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
    # several boxes in the last statement compare as a set, as completion and as gold
    *[
        (GradeItem("math", response, gold), GradeResult(correct, extracted, "ok"))
        for response, gold, correct, extracted in [
            ("So $x = \\boxed{1}$ or $x = \\boxed{-2}$.", "-2, 1", True, "1, -2"),
            ("\\boxed{1} and \\boxed{-2}", "Roots: \\boxed{-2}, \\boxed{1}.", True, "1, -2"),
            ("\\boxed{-2}", "Roots: \\boxed{-2}, \\boxed{1}.", False, "-2"),
            ("\\boxed{1}, \\boxed{-2}, \\boxed{3}", "1, -2", False, "1, -2, 3"),
            ("so \\boxed{(2, 2)} and \\boxed{(6, 2)}", "(6, 2), (2, 2)", True, "(2, 2), (6, 2)"),
            (
                "so \\boxed{(6, 2)} and \\boxed{(2, 2)}",
                "Pairs: \\boxed{(2, 2)} and \\boxed{(6, 2)}",
                True,
                "(6, 2), (2, 2)",
            ),
            ("so \\boxed{(2, 2)}", "\\boxed{(2, 2)} and \\boxed{(6, 2)}", False, "(2, 2)"),
            # in order when the gold is one tuple
            ("$a = \\boxed{2}$, $b = \\boxed{3}$", "(2, 3)", True, "(2, 3)"),
            ("$a = \\boxed{3}$, $b = \\boxed{2}$", "(2, 3)", False, "(3, 2)"),
            # a completion that revises itself in a later paragraph is graded by its final box
            ("So \\boxed{3}.\n\nWait, I dropped a term: \\boxed{4}.", "4", True, "4"),
            ("So \\boxed{3}.\n\nWait, I dropped a term: \\boxed{4}.", "3", False, "4"),
            # an assignment prefix and thousands separators; a list is no number
            ("#### x = 70,000", "70000", True, "x = 70,000"),
            ("\\boxed{x = 10,080}", "10,\\!080", True, "x = 10,080"),
            ("\\boxed{1, 2, 3}", "123", False, "1, 2, 3"),
        ]
    ],
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
    with Grader(num_workers=2, timeout_s=SAFE_TIMEOUT_S, _worker_fn=stuck_or_judge) as g:
        yield g


def test_mixed_batch_in_workers(grader):
    results = grader.grade_batch([item for item, _ in MIXED])
    assert results == [expected for _, expected in MIXED]
    assert grader.worker_starts >= 1


def test_mixed_batch_in_process():
    g = Grader(num_workers=0, timeout_s=SAFE_TIMEOUT_S)
    assert g.grade_batch([item for item, _ in MIXED]) == [expected for _, expected in MIXED]
    assert g.worker_starts == 0


def test_order_is_preserved(grader):
    # symbolic answers finish in the workers in any order; the results must not
    items = [GradeItem("math", f"\\boxed{{\\frac{{\\sqrt{{{k}}}}}{{2}}}}", f"\\sqrt{{{k % 7}}}/2") for k in range(30)]
    results = grader.grade_batch(items)
    assert [r.correct for r in results] == [k == k % 7 for k in range(30)]
    assert [r.extracted for r in results] == [f"\\frac{{\\sqrt{{{k}}}}}{{2}}" for k in range(30)]


def test_numbers_never_start_a_worker(monkeypatch):
    # plain numbers are decided exactly in the calling process: no worker, no math-verify
    def no_math_verify(*args):
        raise AssertionError("math-verify was called for plain numbers")

    monkeypatch.setattr(math_module, "_verify", no_math_verify)
    g = Grader(num_workers=2)
    items = [GradeItem("math", f"so \\boxed{{{k:,}}}", f"{k}.0" if k % 3 else str(k + 1)) for k in range(3000)]
    items += [GradeItem("math", f"#### x = {k:,}", f"{k}") for k in range(1000, 1100)]
    results = g.grade_batch(items)
    assert [r.correct for r in results] == [k % 3 != 0 for k in range(3000)] + [True] * 100
    assert all(r.status == "ok" for r in results)
    assert g.worker_starts == 0
    assert Grader(num_workers=0).grade_batch(items) == results


@HANG_GUARD
def test_a_stuck_answer_times_out_and_the_rest_are_graded(tmp_path):
    pid_file = tmp_path / "pid"
    items = [
        same(1),
        GradeItem("math", "\\boxed{y}", STUCK + str(pid_file)),
        same(2),
        GradeItem("math", "\\boxed{7}", "7.00"),
        same(3, right=False),
        same(4),
    ]
    with Grader(num_workers=2, timeout_s=TIMEOUT_S, _worker_fn=stuck_or_judge) as g:
        results = g.grade_batch(items)
        assert [r.status for r in results] == ["ok", "timeout", "ok", "ok", "ok", "ok"]
        assert [r.correct for r in results] == [True, False, True, True, False, True]
        assert results[1].extracted == "y"
        # the stuck worker was killed and reaped, not left behind
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        # and a fresh worker takes its place
        assert g.grade_batch([same(5)]) == [GradeResult(True, "a5", "ok")]


def test_a_crashed_worker_is_an_error_and_replaced(grader):
    items = [same(1), GradeItem("math", "\\boxed{z}", CRASH), same(2)]
    results = grader.grade_batch(items)
    assert [(r.correct, r.status) for r in results] == [(True, "ok"), (False, "error"), (True, "ok")]
    assert grader.grade_batch([same(5)])[0].correct is True


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
            g.grade("math", "\\boxed{x=y}", "y")
        g.close()
    finally:
        del sys.modules[mod.__name__]


@HANG_GUARD
def test_stuck_answers_in_a_single_worker_pool(tmp_path):
    # with one worker, every stuck answer costs a kill and a restart, and nothing waits forever
    with Grader(num_workers=1, timeout_s=TIMEOUT_S, _worker_fn=stuck_or_judge) as g:
        items = [
            GradeItem("math", "\\boxed{a}", STUCK + str(tmp_path / "1")),
            GradeItem("math", "\\boxed{b}", STUCK + str(tmp_path / "2")),
            same(2),
        ]
        results = g.grade_batch(items)
        assert [(r.correct, r.status) for r in results] == [(False, "timeout"), (False, "timeout"), (True, "ok")]
        assert g.worker_starts == 3


def test_grade_single_and_in_process():
    g = Grader(num_workers=0)
    assert g.grade("math", "\\boxed{\\frac12}", "0.5") == GradeResult(True, "\\frac12", "ok")
    assert g.grade("math", "#### 5", "5") == GradeResult(True, "5", "ok")
    hash_only = Grader(num_workers=0, answer_formats=["hash"])
    assert hash_only.grade("math", "\\boxed{5}", "5") == GradeResult(False, None, "no_answer")


SLOW = GradeItem("math", "\\boxed{(x+1)^{30000}-(x-1)^{30000}}", "(x+1)^{30000}-(x-1)^{29999}")


@HANG_GUARD
def test_in_process_time_limit():
    # num_workers=0 in the main thread: the interval timer is the limit
    assert Grader(num_workers=0, timeout_s=0.5).grade_batch([SLOW]) == [
        GradeResult(False, SLOW.response[7:-1], "timeout")
    ]


@HANG_GUARD
def test_a_pathological_answer_times_out_in_a_worker():
    # real math-verify under a sub-second limit: its timer (or the parent's kill) stops it
    with Grader(num_workers=1, timeout_s=0.5, _worker_fn=stuck_or_judge) as g:
        results = g.grade_batch([same(1), SLOW, same(2)])
        assert [(r.correct, r.status) for r in results] == [(True, "ok"), (False, "timeout"), (True, "ok")]


def test_workers_get_the_real_time_limit(grader):
    # not rounded to whole seconds on the way
    assert grader.grade("math", "\\boxed{y}", LIMIT) == GradeResult(False, "y", "limit=60.25")


def test_chunk_size():
    # a quarter of each worker's share, at most MAX_CHUNK, at least one
    g = Grader(num_workers=2)
    assert [g._chunk_size(n) for n in (1, 8, 9, 100, 10_000)] == [1, 1, 2, 13, grader_module.MAX_CHUNK]
    assert Grader(num_workers=1)._chunk_size(16) == 4


@HANG_GUARD
def test_a_stuck_answer_costs_its_own_limit_not_its_chunk_s(tmp_path):
    # one worker, 16 answers: the first chunk holds the 4 sleepers (see test_chunk_size), which
    # together take longer than one answer's hard limit (2 s + HARD_MARGIN_S) but each far less (the
    # slack, 1.8 s per answer, is no race); the next chunk starts with a stuck answer: it alone times
    # out, and the rest of its chunk is sent again
    limit, nap = 2.0, 0.7
    sleepers = [GradeItem("math", "\\boxed{1}", f"{SLEEP}{nap}") for _ in range(4)]
    stuck = GradeItem("math", "\\boxed{y}", STUCK + str(tmp_path / "pid"))
    rest = [same(k, right=k % 2 == 1) for k in range(11)]
    assert 4 * nap > limit + grader_module.HARD_MARGIN_S > nap + 1.5
    with Grader(num_workers=1, timeout_s=limit, _worker_fn=stuck_or_judge) as g:
        results = g.grade_batch([*sleepers, stuck, *rest])
        assert [(r.correct, r.status) for r in results[:5]] == [(True, "ok")] * 4 + [(False, "timeout")]
        assert [(r.correct, r.status) for r in results[5:]] == [(k % 2 == 1, "ok") for k in range(11)]
        assert g.worker_starts == 2


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
