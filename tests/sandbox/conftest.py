"""Sandbox test fixtures: each isolation this machine can run, with limits small enough to be quick."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from memrl.sandbox import Limits, SandboxPool, detect_isolation, run_job
from memrl.sandbox.pool import PROBE

# small limits: an infinite loop costs one CPU second
FAST = Limits(timeout_s=4.0, cpu_s=1, memory_mb=256, processes=8, open_files=32, file_mb=1, output_kb=8)


def rlimits_python() -> str | None:
    """An interpreter the rlimits sandbox can run (root's programs run as nobody, who must read its library)."""
    for cand in dict.fromkeys([sys.executable, shutil.which("python3.11"), "/usr/bin/python3"]):
        if cand and os.path.exists(cand) and run_job(PROBE, FAST, "rlimits", cand).passed:
            return cand
    return None


def _modes() -> list:
    modes = []
    try:
        ns = detect_isolation() == "namespaces"
    except Exception:  # noqa: BLE001 - reported as a skip below
        ns = False
    modes.append(
        pytest.param(("namespaces", None), id="namespaces", marks=[] if ns else pytest.mark.skip("no namespaces"))
    )
    py = rlimits_python()
    modes.append(
        pytest.param(
            ("rlimits", py), id="rlimits", marks=[] if py else pytest.mark.skip("no interpreter nobody can read")
        )
    )
    return modes


@pytest.fixture(params=_modes())
def pool(request) -> SandboxPool:
    isolation, python = request.param
    return SandboxPool(FAST, workers=2, isolation=isolation, python=python)
