"""The `Problem` record: one query of a benchmark or of the synthetic task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Domains decide how an answer is graded: math (math-verify), choice (a letter), code (sandboxed tests).
DOMAINS = ("math", "choice", "code")


@dataclass(frozen=True)
class Problem:
    """One query.

    Attributes:
        id: unique within its benchmark.
        question: the problem text shown to the model (multiple choice includes the options).
        answer: gold final answer as a string (math: the short answer; choice: the letter);
            None where the benchmark has none (code: graded by tests in `metadata`).
        domain: one of `DOMAINS`.
        source: benchmark name, e.g. "gsm8k" or "synthetic".
        metadata: everything else the source has (level, subject, family, tests, ...).
    """

    id: str
    question: str
    answer: str | None
    domain: str = "math"
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
