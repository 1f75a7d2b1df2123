"""Grading: find the final answer in a completion and decide whether it equals the gold one."""

from memrl.grading.choice import choice_equal, extract_choice
from memrl.grading.extract import after_hash, extract_answer, last_boxed
from memrl.grading.grader import GradeItem, Grader, GradeResult
from memrl.grading.math import math_equal, normalize_number

__all__ = [
    "GradeItem",
    "GradeResult",
    "Grader",
    "after_hash",
    "choice_equal",
    "extract_answer",
    "extract_choice",
    "last_boxed",
    "math_equal",
    "normalize_number",
]
