"""The grader of the `grading` config group, with its code sandbox (`memrl.grading.grader`, `memrl.sandbox`)."""

from __future__ import annotations

from memrl.config.schema import GradingConfig
from memrl.grading.grader import Grader
from memrl.sandbox import Limits, SandboxPool


def build_grader(grading: GradingConfig) -> Grader:
    """The grader of `grading` (a context manager: it owns worker processes)."""
    sb = grading.sandbox
    limits = Limits(
        timeout_s=float(sb.timeout_s),
        cpu_s=int(sb.cpu_s),
        memory_mb=int(sb.memory_mb),
        open_files=int(sb.open_files),
        file_mb=int(sb.file_mb),
        output_kb=int(sb.output_kb),
    )
    return Grader(
        num_workers=int(grading.num_workers),
        timeout_s=float(grading.timeout_s),
        answer_formats=[getattr(f, "value", f) for f in grading.answer_formats],
        sandbox=SandboxPool(limits, workers=int(sb.workers), isolation=str(sb.isolation), python=str(sb.python)),
    )
