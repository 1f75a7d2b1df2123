"""Multiple choice: the chosen letter and its comparison with the gold one."""

from __future__ import annotations

import pytest

from memrl.grading import extract_choice
from memrl.grading.choice import choice_equal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{B}", "B"),
        ("\\boxed{(C)}", "C"),
        ("\\boxed{D. 42 apples}", "D"),
        ("\\boxed{\\text{B}}", "B"),
        ("\\boxed{b}", "B"),
        ("the answer is $\\boxed{A}$.", "A"),
        ("#### C", "C"),
        ("#### c", "C"),
        ("The answer is (B).", "B"),
        ("the answer is (b)", "B"),
        ("Answer: B", "B"),
        ("Answer: b", "B"),
        ("**Answer:** C", "C"),
        ("The correct option is **D**.", "D"),
        ("answer is B, no wait, the answer is C", "C"),
        ("\\boxed{42}, so the answer is E", "E"),
        ("so B.", "B"),
        ("... therefore (C)", "C"),
        ("I pick E", "E"),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "no letter here",
        "The answer is 42",
        "The answer is a prime number.",  # an article, not (A)
        "so b.",  # lower case only in the explicit forms
        "Plan ABC",
        "Answer: F",  # not among A-E
        "",
    ],
)
def test_no_choice(text):
    assert extract_choice(text) is None


def test_letters_widen_the_choices():
    assert extract_choice("Answer: H", "ABCDEFGHIJ") == "H"
    assert extract_choice("Answer: H") is None


def test_bad_letters_are_a_clear_error():
    with pytest.raises(ValueError, match="letters"):
        extract_choice("B", "")
    with pytest.raises(ValueError, match="distinct"):
        extract_choice("B", "ABA")


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("B", "B", True),
        ("b", "(B)", True),
        ("B.", "B", True),
        ("A", "B", False),
        (None, "B", False),
        ("AB", "AB", False),
    ],
)
def test_choice_equal(pred, gold, expected):
    assert choice_equal(pred, gold) is expected
