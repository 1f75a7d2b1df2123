"""Multiple choice: find the letter a completion chose and compare it with the gold letter."""

from __future__ import annotations

import re
from functools import lru_cache

from memrl.grading.extract import after_hash, last_boxed

# `\text{B}` and friends inside a box: unwrapped before reading the letter.
_WRAPPER_RE = re.compile(r"^\\(?:text|textbf|textrm|mathrm|mathbf)\s*\{(.*)\}$", re.DOTALL)


@lru_cache(maxsize=32)
def _patterns(letters: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(explicit, answer-is, trailing) patterns for one set of letters."""
    both = re.escape(letters.upper() + letters.lower())
    upper = re.escape(letters.upper())
    # a whole boxed or #### answer: "B", "(b)", "B. text", "B) text", "Option B"
    explicit = re.compile(
        rf"(?:(?:option|choice)\s*)?(?:\(\s*([{both}])\s*\)|([{both}])(?=$|[.:)\s,;]))", re.IGNORECASE
    )
    # "the answer is (B)", "Answer: b.", "correct option is **C**"
    answer_is = re.compile(
        rf"\b(?:answer|option|choice)s?\s*(?:is|:|=)\s*:?[\s*_]*(?:(?:option|choice)\s*)?"
        rf"(?:\(\s*([{both}])\s*\)|([{both}])(?![A-Za-z0-9'’-]))",
        re.IGNORECASE,
    )
    # a lone capital letter closing the text: "... so B." or "(C)"
    trailing = re.compile(rf"(?:^|[^A-Za-z0-9])\(?([{upper}])\)?[.!]?$")
    return explicit, answer_is, trailing


def _check_letters(letters: str) -> str:
    """`letters` upper-cased; ValueError unless it is a non-empty string of distinct ASCII letters."""
    if not isinstance(letters, str) or not letters or not letters.isascii() or not letters.isalpha():
        raise ValueError(f"letters must be a non-empty string of ASCII letters such as 'ABCDE', got {letters!r}")
    up = letters.upper()
    if len(set(up)) != len(up):
        raise ValueError(f"letters must be distinct, got {letters!r}")
    return up


def _explicit_letter(answer: str, pattern: re.Pattern[str]) -> str | None:
    """The letter that a boxed or #### answer starts with, upper-cased, else None."""
    s = answer.strip()
    m = _WRAPPER_RE.match(s)
    if m is not None:
        s = m.group(1).strip()
    s = s.strip("*_ ")
    m = pattern.match(s)
    if m is None:
        return None
    return (m.group(1) or m.group(2)).upper()


def extract_choice(text: str, letters: str = "ABCDE") -> str | None:
    """The letter a completion chose (upper-case), or None.

    The forms, first found wins: `\\boxed{B}` / `\\boxed{(B)}` / `\\boxed{B. text}` (last box),
    `#### B`, the last "answer is (B)" / "Answer: B", and finally a lone capital letter closing the
    text ("... so B." or "(C)"). Lower-case letters count only in the explicit forms (box, ####,
    "answer is"), and there a bare lower-case letter must end the phrase, so that "the answer is a
    prime" is not read as (A).

    Raises:
        ValueError: `letters` is not a non-empty string of distinct ASCII letters.
    """
    letters = _check_letters(letters)
    if not isinstance(text, str):
        return None
    explicit, answer_is, trailing = _patterns(letters)
    for found in (last_boxed(text), after_hash(text)):
        if found is not None:
            letter = _explicit_letter(found, explicit)
            if letter is not None:
                return letter
    chosen = None
    for m in answer_is.finditer(text):
        if m.group(1):
            chosen = m.group(1)
        elif m.group(2).isupper() or re.match(r"[\s*_]*(?:[.,;:!)\]]|$)", text[m.end() :]):
            chosen = m.group(2)
    if chosen is not None:
        return chosen.upper()
    m = trailing.search(text.rstrip().rstrip("*_$ ").rstrip())
    return m.group(1) if m else None


def _letter(x: object) -> str | None:
    """A single letter from "B", " (b) ", "B." upper-cased, else None."""
    if not isinstance(x, str):
        return None
    s = x.strip().strip("()").strip().rstrip(".").strip()
    return s.upper() if len(s) == 1 and s.isascii() and s.isalpha() else None


def choice_equal(pred_letter: str | None, gold_letter: str | None) -> bool:
    """Whether two choices are the same letter, ignoring case, parentheses and a trailing period.

    None or anything that is not a single letter on either side gives False.
    """
    p, g = _letter(pred_letter), _letter(gold_letter)
    return p is not None and p == g
