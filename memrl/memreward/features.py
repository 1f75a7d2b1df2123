"""Per-rollout answer features of MemReward (docs/methods.md#answer-features): the parsed value and the group's consensus.

For math, each rollout of a query gets `[value, valid, matches_majority]`:

- value = clip(sign(a) * log1p(|a|) / 20, -1, 1) for the parsed numeric answer a;
- valid = 1.0;
- matches_majority = 1.0 when round(a, 2) is the most common rounded answer of the group.

Unparseable answers, and every answer of the "choice" and "code" domains, get [0, 0, 0] (the released
code disabled its one-hot choice features as noise). Two deliberate departures from the released code,
which only change edge cases: a majority answer of 0 counts (the code's `if most_common and ...` drops
it), and rounded answers are compared with half a rounding unit, so 2.00 and 2.01 never match (the code's
`< 0.01` matches them through float noise).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

from memrl.data.problem import DOMAINS
from memrl.errors import UserError

ANSWER_FEAT_DIM = 3
ROUND_DIGITS = 2
# rounded values are multiples of 0.01: half of that separates "equal" from "neighbour" despite float noise
_MATCH_TOL = 0.005

_NUM = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
# alternatives in priority order at a given position: a LaTeX fraction, a plain fraction, a number
_TOKEN = re.compile(
    rf"(?P<lsign>-\s*)?\\[dt]?frac\s*\{{\s*(?P<lnum>-?{_NUM})\s*\}}\s*\{{\s*(?P<lden>-?{_NUM})\s*\}}"
    rf"|(?P<fnum>-?{_NUM})\s*/\s*(?P<fden>{_NUM})(?![\d/])"
    rf"|(?P<num>-?{_NUM})"
)
_BOXED = "\\boxed"


def _to_float(s: str) -> float:
    return float(s.replace(",", ""))


def _token_value(m: re.Match) -> float | None:
    if m.group("lnum") is not None:
        num, den = _to_float(m.group("lnum")), _to_float(m.group("lden"))
        sign = -1.0 if m.group("lsign") else 1.0
        return sign * num / den if den != 0 else None
    if m.group("fnum") is not None:
        num, den = _to_float(m.group("fnum")), _to_float(m.group("fden"))
        return num / den if den != 0 else None
    return _to_float(m.group("num"))


def _numbers(text: str) -> list[float]:
    """The numbers of `text` in order; a fraction counts as one number, non-finite values are dropped."""
    values = (_token_value(m) for m in _TOKEN.finditer(text.replace("\u2212", "-")))
    return [v for v in values if v is not None and math.isfinite(v)]


def _last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}`, braces balanced; None if there is none (or it is unclosed)."""
    start = text.rfind(_BOXED + "{")
    if start < 0:
        return None
    i = start + len(_BOXED) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def parse_numeric_answer(answer: str) -> float | None:
    """The numeric answer of a rollout: the first number after `####`, else the first number in the last
    `\\boxed{}`, else the last number of the text.

    Numbers may carry thousands commas ("1,234"), a sign and decimals; "a/b", "\\frac{a}{b}" and
    "\\dfrac{a}{b}" are read as a / b. A rule that finds no number falls through to the next one.

    Returns:
        the value, or None when no rule finds a (finite) number.
    """
    if "####" in answer:
        found = _numbers(answer.split("####", 1)[1])
        if found:
            return found[0]
    boxed = _last_boxed(answer)
    if boxed is not None:
        found = _numbers(boxed)
        if found:
            return found[0]
    found = _numbers(answer)
    return found[-1] if found else None


def _majority(values: Sequence[float | None]) -> float | None:
    counts = Counter(round(v, ROUND_DIGITS) for v in values if v is not None)
    # Counter.most_common keeps insertion order among equal counts: ties go to the first answer seen
    return counts.most_common(1)[0][0] if counts else None


def majority_answer(answers: Sequence[str]) -> float | None:
    """The most common numeric answer of a group, rounded to 2 decimals (ties: the first seen).

    Args:
        answers: the answers of one query's rollouts.

    Returns:
        the majority value, or None when no answer parses.
    """
    return _majority([parse_numeric_answer(a) for a in answers])


def matches_majority(value: float | None, majority: float | None) -> bool:
    """Whether a parsed answer equals the group's majority once rounded to 2 decimals."""
    if value is None or majority is None:
        return False
    return abs(round(value, ROUND_DIGITS) - majority) < _MATCH_TOL


def answer_features(answers: Sequence[str], domain: str) -> torch.Tensor:
    """Answer features of one group (the rollouts of one query).

    Args:
        answers: R answer texts (the answer part of each rollout).
        domain: "math", "choice" or "code"; only math answers get non-zero features.

    Returns:
        [R, 3] float32: `[clip(sign(a) log1p(|a|) / 20, -1, 1), 1, matches_majority]` per parseable math
        answer, zeros otherwise.

    Raises:
        UserError: `domain` is not one of `DOMAINS`.
    """
    if domain not in DOMAINS:
        raise UserError(f"unknown answer domain '{domain}'; valid: {', '.join(DOMAINS)}")
    feats = torch.zeros(len(answers), ANSWER_FEAT_DIM)
    if domain != "math":
        return feats
    values = [parse_numeric_answer(a) for a in answers]
    majority = _majority(values)
    for i, a in enumerate(values):
        if a is None:
            continue
        scaled = math.copysign(math.log1p(abs(a)), a) / 20.0 if a != 0 else 0.0
        feats[i, 0] = min(1.0, max(-1.0, scaled))
        feats[i, 1] = 1.0
        feats[i, 2] = float(matches_majority(a, majority))
    return feats
