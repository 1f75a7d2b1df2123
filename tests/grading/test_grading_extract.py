"""Answer extraction: the last box, the boxes of the last statement, the last ####, and the order of formats."""

from __future__ import annotations

from enum import Enum

import pytest

from memrl.grading import after_hash, extract_answer, last_boxed
from memrl.grading.extract import extract_answers, final_boxes


class Fmt(str, Enum):
    boxed = "boxed"
    hash = "hash"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{18}.", "18"),
        ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{2}}{\\sqrt{3}}}", "\\frac{\\sqrt{2}}{\\sqrt{3}}"),
        ("first \\boxed{1}, then \\boxed{2}", "2"),
        ("\\boxed{1} and finally \\fbox{7}", "7"),
        ("\\fbox{7} then \\boxed{8}", "8"),
        ("$\\boxed 5$", "5"),
        ("\\boxed {  42 }", "42"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("no box here", None),
        ("\\boxed{\\frac{1}{2}", None),
        ("\\boxed{}", None),
        ("\\boxed{1} but then \\boxed{2", None),
        ("\\fboxsep=3pt", None),
        ("", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so the answer is \\boxed{18}.", ["18"]),
        # one statement that boxes each solution: all of them, in order
        ("The solutions are $x = \\boxed{1}$ and $x = \\boxed{-2}$.", ["1", "-2"]),
        ("so \\boxed{(2, 2)} and \\boxed{(6, 2)}", ["(2, 2)", "(6, 2)"]),
        ("\\boxed{1}, \\boxed{2},\n\\boxed{3}", ["1", "2", "3"]),
        # display math split by blank lines is still one statement when only "and" stands between
        ("\\[\\boxed{1}\\]\n\nand\n\n\\[\\boxed{-2}\\]", ["1", "-2"]),
        # a completion that revises itself in a later paragraph: the final box only
        ("So \\boxed{3}.\n\nWait, that is wrong. Redoing it: \\boxed{4}.", ["4"]),
        ("\\boxed{1} and \\boxed{2}\n\nOn second thought, \\boxed{5} and \\boxed{6}", ["5", "6"]),
        # repeats, empty and nested boxes
        ("\\boxed{5}, that is \\boxed{ 5 }", ["5"]),
        ("\\boxed{} and \\boxed{3}", ["3"]),
        ("\\boxed{\\boxed{7}}", ["7"]),
        ("$\\boxed 5$ and $\\boxed{6}$", ["5", "6"]),
        # as last_boxed: None when the last box is missing, open or empty
        ("\\boxed{1} but then \\boxed{2", None),
        ("\\boxed{1} and \\boxed{}", None),
        ("no box", None),
        (None, None),
    ],
)
def test_final_boxes(text, expected):
    assert final_boxes(text) == expected


def test_extract_answer_joins_the_final_boxes():
    assert extract_answers("so \\boxed{1} and \\boxed{-2}") == ["1", "-2"]
    assert extract_answer("so \\boxed{1} and \\boxed{-2}") == "1, -2"
    assert extract_answers("#### 1,234") == ["1,234"]
    assert extract_answers("nothing", ("boxed", "hash")) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Janet has 3 apples.\n#### 18", "18"),
        ("#### 1\nmore steps\n#### 2  \ntrailing words", "2"),
        ("####18", "18"),
        ("##### 7", "7"),
        ("#### $1,234", "$1,234"),
        ("#### \nanswer on the next line", None),
        ("no hashes", None),
        ("###  3", None),
    ],
)
def test_after_hash(text, expected):
    assert after_hash(text) == expected


def test_extract_answer_order_of_formats():
    text = "#### 4\nbut really \\boxed{3}"
    assert extract_answer(text) == "3"
    assert extract_answer(text, ("hash", "boxed")) == "4"
    assert extract_answer(text, ("hash",)) == "4"
    assert extract_answer(text, "hash") == "4"
    assert extract_answer("#### 9", ("boxed",)) is None
    # the next format is tried only when the first finds nothing
    assert extract_answer("#### 9", ("boxed", "hash")) == "9"
    assert extract_answer("nothing", ("boxed", "hash")) is None


def test_extract_answer_accepts_enum_members():
    assert extract_answer("#### 4 \\boxed{3}", [Fmt.hash, Fmt.boxed]) == "4 \\boxed{3}"
    assert extract_answer("\\boxed{3}\n#### 4", [Fmt.hash]) == "4"


def test_extract_answer_unknown_format_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'latex'.*boxed, hash"):
        extract_answer("\\boxed{3}", ("boxed", "latex"))
