"""A pool that runs many sandboxed jobs in parallel, one fresh process group each, sized to the CPUs."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from memrl.errors import UserError
from memrl.sandbox.runner import ISOLATIONS, Job, Limits, SandboxError, Verdict, run_job

log = logging.getLogger(__name__)

PROBE = Job("def f():\n    return 1\n", (("probe", "assert f() == 1"),))


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@functools.cache
def detect_isolation(python: str | None = None) -> str:
    """Return "namespaces" when this kernel lets the harness build its namespaces and fresh root, else "rlimits".

    Raises:
        SandboxError: not even the rlimits sandbox runs a trivial program (e.g. root's interpreter is
            unreadable to the user nobody that programs run as).
    """
    limits = Limits(timeout_s=30, cpu_s=10)
    try:
        v = run_job(PROBE, limits, "namespaces", python)
        if v.passed:
            return "namespaces"
        why = v.detail
    except SandboxError as e:
        why = str(e)
    v = run_job(PROBE, limits, "rlimits", python)
    if not v.passed:
        raise SandboxError(f"the sandbox cannot run a trivial program ({v.status}: {v.detail}) {v.output[-500:]}")
    log.warning(
        "code sandbox: namespaces are not available here (%s); programs run with resource limits only, "
        "which do not hide the file system or stop the network (see memrl/sandbox/__init__.py)",
        why,
    )
    return "rlimits"


class SandboxPool:
    """Runs jobs in parallel, each in its own sandbox; results come back in the order of the jobs.

    Args:
        limits: per-program limits.
        workers: programs run at once (0 or None: one per CPU).
        isolation: "auto" (namespaces where the kernel allows, else rlimits), "namespaces" (refuse to
            run without them) or "rlimits".
        python: the interpreter for the harness (default: this one).
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
        if isolation not in ("auto", *ISOLATIONS):
            raise UserError(f"grading.sandbox.isolation must be auto, namespaces or rlimits, got {isolation!r}")
        self.limits = limits or Limits()
        self.workers = workers or cpu_count()
        self.python = python
        self._requested = isolation
        self._isolation: str | None = None if isolation == "auto" else isolation

    @property
    def isolation(self) -> str:
        """The isolation in use ("namespaces" or "rlimits"), detected on first use for "auto"."""
        if self._isolation is None:
            self._isolation = detect_isolation(self.python)
        return self._isolation

    def run(self, jobs: Sequence[Job]) -> list[Verdict]:
        """Run every job; verdicts in the same order.

        Raises:
            SandboxError: isolation="namespaces" where the kernel does not allow them, or the sandbox broke.
        """
        jobs = list(jobs)
        if not jobs:
            return []
        isolation = self.isolation
        if len(jobs) == 1 or self.workers == 1:
            return [run_job(j, self.limits, isolation, self.python) for j in jobs]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs)), thread_name_prefix="memrl-sandbox") as ex:
            return list(ex.map(lambda j: run_job(j, self.limits, isolation, self.python), jobs))
