"""Math equivalence: exact numbers, normalisation, and math-verify on the symbolic pairs."""

from __future__ import annotations

import logging
import signal
import threading

import pytest

from memrl.grading import math_equal, normalize_number
from memrl.grading.math import fast_math_equal, is_tuple, join_answers, judge_math

EQUIVALENT = [
    ("18", "18.0"),
    ("1,234", "1234"),
    ("007", "7"),
    ("\\dfrac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "1/2"),
    ("50\\%", "50"),
    ("5 \\text{ cm}", "5"),
    ("\\$18", "18"),
    ("x=3", "3"),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
    ("(1,2)", "(1, 2)"),
    ("\\pi", "\\pi"),
    ("2\\pi", "2 \\pi"),
    # an assignment prefix and thousands separators, either way round
    ("x = 70,000", "70000"),
    ("70000", "x = 70,000"),
    ("x = 10,080", "10,\\!080"),
    ("x = 70,000", "7 \\times 10^4"),
    ("x_1 = 1,234.5", "1234.5"),
]
NOT_EQUIVALENT = [
    ("18", "19"),
    ("1,234", "1.234"),
    ("0.5", "0.51"),
    ("\\frac{1}{3}", "0.33"),
    ("12", "123"),
    ("", "5"),
    ("(1,2)", "(2,1)"),
    ("\\sqrt{2}", "2"),
    # commas that are not thousands separators: tuples, intervals, lists
    ("(1,2)", "12"),
    ("(1,000)", "1000"),
    ("[1,2)", "12"),
    ("1, 2, 3", "123"),
    ("1,2", "12"),
    ("x = 1,2", "12"),
    ("12,34", "1234"),
    # an assignment to another variable, and chains that are not assignments
    ("x = 5", "y = 5"),
    ("x = y = 5", "6"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUIVALENT)
def test_equivalent(pred, gold):
    assert math_equal(pred, gold) is True


@pytest.mark.parametrize(("pred", "gold"), NOT_EQUIVALENT)
def test_not_equivalent(pred, gold):
    assert math_equal(pred, gold) is False


@pytest.mark.parametrize(
    ("pred", "gold"),
    [("x=y+1", "y+1"), ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"), ("\\frac{\\pi}{2}", "\\pi/2"), ("2x+1", "1+2x")],
)
def test_symbolic_pairs_go_through_math_verify(pred, gold):
    # undecided by the cheap checks: the verdict is math-verify's
    assert fast_math_equal(pred, gold) is None
    assert judge_math(pred, gold) == (True, "ok")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,234", "1234"),
        ("1,234.5", "1234.5"),
        ("1,2", None),
        ("12,34", None),
        ("1,2345", None),
        ("007", "7"),
        ("+5", "5"),
        ("-0", "0"),
        ("\u22123", "-3"),
        ("2.50", "2.5"),
        ("18.0", "18"),
        (".5", "0.5"),
        ("42.", "42"),
        ("\\$18", "18"),
        ("$18$", "18"),
        ("$\\$18.00$", "18"),
        ("-$5", "-5"),
        ("\\(42\\)", "42"),
        ("50%", "50"),
        ("50\\%", "50"),
        ("5 \\text{ cm}", "5"),
        ("5 \\mbox{cm}", "5"),
        ("\\mathrm{18}", "18"),
        ("18 dollars", "18"),
        ("\\text{18 dollars}", "18"),
        ("30^\\circ", "30"),
        ("10,\\!000", "10000"),
        ("3{,}000", "3000"),
        ("1\\,000", "1000"),
        ("\\dfrac{1}{2}", "0.5"),
        ("\\tfrac{3}{4}", "0.75"),
        ("\\frac12", "0.5"),
        ("\\frac{2}{6}", "1/3"),
        ("\\frac{-1}{2}", "-0.5"),
        ("-\\frac{3}{4}", "-0.75"),
        ("1/3", "1/3"),
        ("\\frac{1}{0}", None),
        ("x", None),
        ("2\\pi", None),
        ("2 pi", None),
        ("5 x", None),
        ("1e5", None),
        ("", None),
        ("1" * 300, None),
        ("x = 70,000", "70000"),
        ("$x=10,\\!080$", "10080"),
        ("y_{2} = -\\frac{1}{2}", "-0.5"),
        ("x = y = 5", None),
        ("2 + 3 = 5", None),
        ("x =", None),
    ],
)
def test_normalize_number(raw, expected):
    assert normalize_number(raw) == expected


def test_equal_values_have_one_canonical_string():
    assert normalize_number("0.5") == normalize_number("\\frac12") == normalize_number("1/2") == "0.5"
    assert normalize_number("1,234") == normalize_number("1234.000") == "1234"


@pytest.mark.parametrize(("pred", "gold"), [(None, "5"), (123, "5"), ("\\frac{{{", "5"), ("5", ""), ("\\left(", "2")])
def test_garbage_is_false_not_an_error(pred, gold):
    assert math_equal(pred, gold) is False


def test_off_the_main_thread_math_verify_runs_without_signals():
    # math-verify's SIGALRM timeouts raise ValueError off the main thread unless disabled
    out = {}
    t = threading.Thread(target=lambda: out.update(r=judge_math("x=3", "3")))
    t.start()
    t.join(30)
    assert out["r"] == (True, "ok")


# sympy expands this for minutes; the time limit must stop it
SLOW_PRED = "(x+1)^{30000}-(x-1)^{30000}"
SLOW_GOLD = "(x+1)^{30000}-(x-1)^{29999}"


# a hang guard (without a working limit these calls run for minutes), on a thread: the limit uses SIGALRM
@pytest.mark.timeout(120, method="thread")
def test_time_limit_stops_a_pathological_answer():
    handler = signal.getsignal(signal.SIGALRM)
    assert judge_math(SLOW_PRED, SLOW_GOLD, timeout_s=0.25) == (False, "timeout")
    assert math_equal(SLOW_PRED, SLOW_GOLD, timeout_s=0.25) is False
    # the timer is disarmed and the previous handler back
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler


def test_an_outer_timer_runs_on():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 3600.0)
        assert judge_math("2x+1", "1+2x", timeout_s=30.0) == (True, "ok")
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < left <= 3600.0
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_time_limit_is_the_real_fraction(monkeypatch):
    # one timer for the whole judgement, armed with the limit as given (math-verify's own alarm
    # takes whole seconds: 30.25 s would become 30 s)
    armed = []
    real = signal.setitimer

    def spy(which, seconds, interval=0.0):
        armed.append((which, seconds))
        return real(which, seconds, interval)

    monkeypatch.setattr(signal, "setitimer", spy)
    assert judge_math("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", timeout_s=30.25) == (True, "ok")
    assert judge_math("\\sqrt{8}", "2\\sqrt{2}", timeout_s=10.5) == (True, "ok")
    assert armed == [
        (signal.ITIMER_REAL, 30.25),
        (signal.ITIMER_REAL, 0),
        (signal.ITIMER_REAL, 10.5),
        (signal.ITIMER_REAL, 0),
    ]


def test_no_warning_about_math_verify_s_own_timeout(monkeypatch, caplog):
    # math-verify warns once per process when its own limit is off; ours replaces it, silently
    import math_verify.grader
    import math_verify.parser

    monkeypatch.setattr(math_verify.parser, "TIMEOUT_WARNING_SHOWN", False)
    monkeypatch.setattr(math_verify.grader, "TIMEOUT_WARNING_SHOWN", False)
    with caplog.at_level(logging.WARNING):
        assert judge_math("2x+1", "1+2x") == (True, "ok")
    assert not [r for r in caplog.records if r.name.startswith("math_verify")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(2, 3)", True),
        ("\\left( a, b \\right)", True),
        ("$(2,3)$", True),
        ("((1,2),(3,4))", True),
        ("(f(1), 2)", True),
        ("(1, 2), (3, 4)", False),
        ("(1,2]", False),
        ("(5)", False),
        ("2, 3", False),
        ("(1, 2", False),
    ],
)
def test_is_tuple(text, expected):
    assert is_tuple(text) is expected


def test_join_answers():
    assert join_answers(["1", "-2"]) == "1, -2"
    assert join_answers(["2", "3"], ordered=True) == "(2, 3)"
    assert join_answers(["(2, 2)", "(6, 2)"]) == "(2, 2), (6, 2)"
    # repeats go, also of equal numbers: one answer is left as it is
    assert join_answers(["\\frac12", " 0.5 ", "1/2"]) == "\\frac12"
    assert join_answers(["x = 3"], ordered=True) == "x = 3"
