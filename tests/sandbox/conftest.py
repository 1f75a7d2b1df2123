"""Sandbox test fixtures: each isolation this machine can run, with limits small enough to be quick.

The wall-clock limit is generous (60 s) and the CPU limit small (1 s): on a loaded machine a busy
loop still reaches its CPU limit long before the wall clock, so verdicts do not depend on load.
"""

from __future__ import annotations

import os
import sys

import pytest

from memrl.sandbox import Limits, SandboxPool
from memrl.sandbox.pool import isolation_problem

FAST = Limits(timeout_s=60.0, cpu_s=1, memory_mb=256, open_files=32, file_mb=1, output_kb=8)


def rlimits_python() -> str | None:
    """An interpreter the rlimits mode can run (as root, programs run as nobody, who must read its library)."""
    for cand in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        if os.path.exists(cand) and isolation_problem("rlimits", cand) is None:
            return cand
    return None


def modes() -> list:
    """(isolation, python) of every mode, skipped where this machine cannot run it."""
    bwrap = isolation_problem("bwrap", None)
    py = rlimits_python()
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
