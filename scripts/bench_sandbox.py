"""Throughput of the code sandbox: programs per second on this machine's CPUs.

    python scripts/bench_sandbox.py                         # HumanEval canonical + mutants, MBPP references
    python scripts/bench_sandbox.py --isolation rlimits --python /usr/bin/python3
    python scripts/bench_sandbox.py --workers 1             # one program at a time

Runs the 164 HumanEval canonical solutions (all must pass) and a mutated wrong version of each (its
entry point's result perturbed: booleans negated, numbers + 1, strings, lists and tuples extended;
all must fail), then the 500 MBPP reference solutions (all must pass), through `SandboxPool` with the
default limits (MBPP with a 20 s CPU limit: its slowest reference, mbpp-123, needs 2-5 s of CPU
depending on the machine's load). The baseline is the released MemReward approach on the same programs: a plain
`python -c` subprocess per program with a timeout and nothing else; the ratio is the price of
isolation. Prints counts, programs per second and the ratio; exits 1 if a verdict is wrong.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from memrl.data.loaders import load_problems
from memrl.grading.code import build_job, code_task
from memrl.sandbox import Job, Limits, SandboxPool, cpu_count

# appended to a correct HumanEval program: the entry point now returns a wrong value
MUTANT = """

def _memrl_perturb(r):
    if isinstance(r, bool):
        return not r
    if isinstance(r, (int, float)):
        return r + 1
    if isinstance(r, str):
        return r + "x"
    if isinstance(r, list):
        return r + [None]
    if isinstance(r, tuple):
        return r + (None,)
    if r is None:
        return 0
    return None

_memrl_original = {entry}

def {entry}(*args, **kwargs):
    return _memrl_perturb(_memrl_original(*args, **kwargs))
"""


def plain_subprocess(job: Job, timeout_s: float) -> bool:
    """The baseline: program and tests in one `python -c`, judged by the exit code (what MemReward does)."""
    source = job.program + "\n" + "\n".join(code for _, code in job.tests)
    try:
        return subprocess.run([sys.executable, "-c", source], capture_output=True, timeout=timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def timed(fn, jobs):
    t0 = time.perf_counter()
    out = fn(jobs)
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=0, help="programs at once (0: one per CPU)")
    ap.add_argument("--isolation", default="auto", help="auto | bwrap | rlimits (grading.sandbox.isolation)")
    ap.add_argument("--python", default="", help="interpreter of the sandbox (grading.sandbox.python)")
    args = ap.parse_args()
    workers = args.workers or cpu_count()
    pool = SandboxPool(Limits(), workers=workers, isolation=args.isolation, python=args.python)
    slow_pool = SandboxPool(
        Limits(cpu_s=20, timeout_s=60), workers=workers, isolation=args.isolation, python=args.python
    )
    he = load_problems({"name": "humaneval", "source": "bundled", "split": "test", "domain": "code"})
    mb = load_problems({"name": "mbpp", "source": "bundled", "split": "test", "domain": "code"})
    canonical = [build_job(p.metadata["canonical_solution"], code_task(p.metadata))[0] for p in he]
    mutants = [
        Job(j.program + MUTANT.format(entry=p.metadata["entry_point"]), j.tests, j.expose)
        for j, p in zip(canonical, he)
    ]
    references = [build_job(p.metadata["code"], code_task(p.metadata))[0] for p in mb]
    print(f"sandbox isolation: {pool.isolation}; {workers} workers on {cpu_count()} CPUs")
    ok = True
    rows = []
    for name, jobs, want, runner in (
        ("HumanEval canonical", canonical, "passed", pool),
        ("HumanEval mutants", mutants, "fail", pool),
        ("MBPP references", references, "passed", slow_pool),
    ):
        verdicts, dt = timed(runner.run, jobs)
        right = sum((v.passed if want == "passed" else not v.passed) for v in verdicts)
        statuses = {}
        for v in verdicts:
            statuses[v.status] = statuses.get(v.status, 0) + 1
        ok &= right == len(jobs)
        rows.append((name, jobs, dt))
        print(f"{name:22s} {right}/{len(jobs)} as expected ({want}); {statuses}; {len(jobs) / dt:6.1f} programs/s")
        for v in verdicts:
            if (v.passed if want == "passed" else not v.passed) is False:
                print(f"   unexpected: {v.status} {v.detail[:120]}")
    # baseline on the canonical HumanEval programs, same parallelism
    with ThreadPoolExecutor(max_workers=workers) as ex:
        base, dt_base = timed(lambda js: list(ex.map(lambda j: plain_subprocess(j, 5.0), js)), canonical)
    print(
        f"baseline (plain `python -c`, exit code, no isolation) on HumanEval canonical: {sum(base)}/{len(base)} pass; "
        f"{len(canonical) / dt_base:6.1f} programs/s"
    )
    for name, _jobs, dt in rows[:2]:
        print(f"sandbox/baseline throughput ratio, {name}: {dt_base / dt:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
