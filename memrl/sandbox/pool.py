"""A pool that runs many sandboxed jobs in parallel, one fresh sandbox each, sized to the CPUs."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from memrl.errors import UserError
from memrl.sandbox.runner import ISOLATIONS, Job, Limits, SandboxError, Verdict, run_job, run_once

log = logging.getLogger(__name__)

# A trivial program that also imports from the interpreter's compiled-module folder, so that an
# interpreter whose library the program's user cannot read fails here, not on every program.
PROBE = Job("import decimal\n\ndef f():\n    return 1\n", (("probe", "assert f() == 1"),), ("f",))
CHOICES = ("auto", *ISOLATIONS)


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@functools.cache
def isolation_problem(isolation: str, python: str | None = None) -> str | None:
    """None when `isolation` runs a trivial program correctly with `python`, else why not."""
    try:
        status, detail, output = run_once(PROBE, Limits(timeout_s=60, cpu_s=10), isolation, python)
    except SandboxError as e:
        return str(e)
    if status != "passed":
        return f"{status}: {detail} {output.strip()[-300:]}".strip()
    return None


def usable_python(isolation: str) -> str | None:
    """An interpreter `isolation` runs here: this one, else the system's /usr/bin/python3 (which the user
    nobody can read, unlike an interpreter under root's home); None when neither works."""
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        if os.path.exists(python) and isolation_problem(isolation, python) is None:
            return python
    return None


@functools.cache
def detect_isolation(python: str | None = None) -> str:
    """The strongest isolation that works here: "bwrap", else "rlimits" (logged either way).

    Raises:
        UserError: neither runs a trivial program (e.g. the interpreter is unreadable to nobody).
    """
    bwrap = isolation_problem("bwrap", python)
    if bwrap is None:
        log.info("code sandbox: bubblewrap (namespaces, read-only root, seccomp)")
        return "bwrap"
    rlimits = isolation_problem("rlimits", python)
    if rlimits is None:
        log.warning(
            "code sandbox: bubblewrap does not work here (%s); programs run with resource limits, seccomp "
            "and Landlock only (see docs/code-sandbox.md for what that does not stop)",
            bwrap,
        )
        return "rlimits"
    raise UserError(
        f"the code sandbox cannot run a trivial program with grading.sandbox.python={python or sys.executable}: "
        f"bwrap: {bwrap}; rlimits: {rlimits}.{_hint()}"
    )


def _hint() -> str:
    if os.geteuid() == 0:
        return (
            " As root, the rlimits mode runs programs as the user nobody (uid 65534), who must be able to "
            "read the interpreter and its library: set grading.sandbox.python to one (e.g. /usr/bin/python3)."
        )
    return ""


class SandboxPool:
    """Runs jobs in parallel, each in its own sandbox; results come back in the order of the jobs.

    Args:
        limits: per-program limits.
        workers: programs run at once (0 or None: one per CPU).
        isolation: "auto" (bwrap where it works, else rlimits), "bwrap" or "rlimits".
        python: the interpreter of the sandbox (None or "": this one); checked on first use.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        workers: int | None = None,
        isolation: str = "auto",
        python: str | None = None,
    ) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise UserError(f"grading.sandbox.workers must be an integer >= 0 (0: one per CPU), got {workers!r}")
        if isolation not in CHOICES:
            raise UserError(f"grading.sandbox.isolation must be one of {', '.join(CHOICES)}, got {isolation!r}")
        self.limits = limits or Limits()
        self.workers = workers or cpu_count()
        self.python = python or None
        self._requested = isolation
        self._isolation: str | None = None

    @property
    def isolation(self) -> str:
        """The isolation in use, checked on first use (a trivial program must pass).

        Raises:
            UserError: the requested isolation (or, for "auto", every one) does not work here.
        """
        if self._isolation is None:
            if self._requested == "auto":
                self._isolation = detect_isolation(self.python)
            else:
                problem = isolation_problem(self._requested, self.python)
                if problem is not None:
                    raise UserError(
                        f"grading.sandbox.isolation={self._requested} does not work here with "
                        f"grading.sandbox.python={self.python or sys.executable}: {problem}.{_hint()}"
                    )
                self._isolation = self._requested
        return self._isolation

    def run(self, jobs: Sequence[Job]) -> list[Verdict]:
        """Run every job; verdicts in the same order. Every program gets a verdict (see `run_job`)."""
        jobs = list(jobs)
        if not jobs:
            return []
        isolation = self.isolation
        if len(jobs) == 1 or self.workers == 1:
            return [run_job(j, self.limits, isolation, self.python) for j in jobs]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)), thread_name_prefix="memrl-sandbox") as ex:
            return list(ex.map(lambda j: run_job(j, self.limits, isolation, self.python), jobs))
