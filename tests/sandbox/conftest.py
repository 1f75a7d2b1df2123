"""Sandbox test fixtures: each isolation this machine can run, with limits small enough to be quick.

The wall-clock limit is generous (60 s) and the CPU limit small (1 s): on a loaded machine a busy
loop still reaches its CPU limit long before the wall clock, so verdicts do not depend on load.
"""

from __future__ import annotations

import pytest

from memrl.sandbox import Limits, SandboxPool
from memrl.sandbox.pool import isolation_problem, usable_python

FAST = Limits(timeout_s=60.0, cpu_s=1, memory_mb=256, open_files=32, file_mb=1, output_kb=8)


def modes() -> list:
    """(isolation, python) of every mode, skipped where this machine cannot run it."""
    bwrap = isolation_problem("bwrap", None)
    py = usable_python("rlimits")
    return [
        pytest.param(("bwrap", None), id="bwrap", marks=[pytest.mark.skip(f"no bwrap: {bwrap}")] if bwrap else []),
        pytest.param(
            ("rlimits", py), id="rlimits", marks=[] if py else [pytest.mark.skip("no interpreter nobody can read")]
        ),
    ]


@pytest.fixture(params=modes())
def pool(request) -> SandboxPool:
    isolation, python = request.param
    return SandboxPool(FAST, workers=2, isolation=isolation, python=python)
