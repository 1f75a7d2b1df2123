"""`run_worker`: tests/rollout/dist_worker.py under torchrun (2 gloo processes, one thread each, a hang deadline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "dist_worker.py"
# a hang guard, not a speed check
DEADLINE_S = 400


def _run_worker(out: Path, *args: str, env: dict[str, str], nproc: int = 2) -> tuple[list[dict], str]:
    """(each rank's result, the launch's output) of `dist_worker.py args` under torchrun; fails on error or hang."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(WORKER)]
    proc = subprocess.Popen(
        [*cmd, *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not end within {DEADLINE_S} s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)], output


@pytest.fixture
def run_worker(tiny_model_dir, subprocess_env):
    """`run_worker(out, *args, nproc=2)`; the tiny model is built first (the ranks would otherwise wait on its lock)."""
    return lambda out, *args, **kw: _run_worker(out, *args, env=subprocess_env(VLLM_LOGGING_LEVEL="WARNING"), **kw)
