"""Launching tests/dist/worker.py: alone (the 1-process reference) or under torchrun, 2 gloo processes on CPU.

Every launch runs in its own process session with a deadline: a hang kills the whole group and fails the
test instead of blocking the suite. Each rank uses one thread (OMP_NUM_THREADS=1). Runs several tests
compare against are made once per session (`runs`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# a hang guard, not a speed check: far above a run's ~20 s, so a loaded machine does not fail the suite
DEADLINE_S = 300


@dataclass
class Launch:
    returncode: int
    output: str
    out: Path

    @property
    def result(self) -> dict:
        return json.loads((self.out / "result.json").read_text())

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return torch.load(self.out / "params.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def descendants(pid: int) -> list[int]:
    """The processes started under `pid`, recursively (torchrun's workers run in sessions of their own, so
    killing the agent's process group does not reach them)."""
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(x) for x in children.read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *descendants(kid)]
    return out


def kill_launch(proc: subprocess.Popen) -> None:
    """SIGKILL a launch: every worker it started, then the agent's process group."""
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finish(proc: subprocess.Popen, out: Path, deadline_s: float = DEADLINE_S) -> Launch:
    try:
        output, _ = proc.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        kill_launch(proc)
        output, _ = proc.communicate()
        pytest.fail(f"launch did not end within {deadline_s} s:\n{output[-4000:]}")
    return Launch(proc.returncode, output, out)


def launch(
    out: Path, *args: str, env: dict[str, str], nproc: int | None = 2, deadline_s: float = DEADLINE_S
) -> Launch:
    """worker.py with `args` writing to `out`: under torchrun with `nproc` processes, or alone (nproc None)."""
    out.mkdir(parents=True, exist_ok=True)
    if nproc is None:
        cmd = [sys.executable, str(WORKER), "--no-shard"]
    else:
        cmd = [*TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", str(WORKER)]
    return finish(start([*cmd, "--out", str(out), *args], env), out, deadline_s)


def ok(run: Launch) -> Launch:
    assert run.returncode == 0, run.output[-4000:]
    return run


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="session")
def tiny_built(tiny_model_dir):
    """The tiny model is built before any worker starts (the workers would otherwise all wait on its lock)."""
    return tiny_model_dir


@pytest.fixture(scope="session")
def runs(tmp_path_factory, tiny_built, subprocess_env):
    """Runs compared by several tests, made on first use: 4 steps alone, and on 2 ranks (with HF export)."""
    cache: dict[str, Launch] = {}
    root = tmp_path_factory.mktemp("dist-runs")

    def get(name: str) -> Launch:
        if name not in cache:
            if name == "single":
                cache[name] = ok(launch(root / name, "--steps", "4", env=subprocess_env(), nproc=None))
            elif name == "two":
                export = ("--export", str(root / name / "hf"))
                cache[name] = ok(launch(root / name, "--steps", "4", *export, env=subprocess_env()))
            else:
                raise KeyError(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def dl(tiny_built, subprocess_env):
    """The launch helpers of this file, for the tests (conftest modules are not importable by name); launches
    get `subprocess_env()` as it is when they start."""
    from types import SimpleNamespace

    return SimpleNamespace(
        launch=lambda out, *args, **kw: launch(out, *args, env=subprocess_env(), **kw),
        start=lambda cmd: start(cmd, subprocess_env()),
        finish=finish,
        ok=ok,
        max_diff=max_diff,
        free_port=free_port,
        worker=WORKER,
        torchrun=TORCHRUN,
        repo=REPO,
        env=subprocess_env,
        kill_launch=kill_launch,
    )
