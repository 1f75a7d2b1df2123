"""Math grading throughput: memrl's Grader vs math-verify called directly, on the same answers, in one run.

    make bench            (or: python scripts/bench_grading.py --items 2000 --workers 2)

By default every answer needs math-verify (none is a plain number or equal as a string): the worst
case for the Grader, whose exact numeric check otherwise decides most answers in the calling
process; `--symbolic-fraction 0.1` mixes in plain numbers as GSM8K-style completions have them.
`--workload repeated` (default) draws from a few pairs that take math-verify 2-3 ms each;
`--workload groups` has varied answers in groups of 8 per problem, as GRPO samples them, which
take it 5-25 ms each (wrong answers cost sympy the most).
The baseline is what most RL code does: `verify(parse(gold), parse(pred))` for every completion,
sequentially in the main process, timed in the same run, so the ratios hold on a loaded machine
even when the absolute rates do not. The row "chunk=1" sends the workers one answer per message, as
the Grader did before it sent chunks: the difference to the row above it is the cost of a process
round trip per answer. Worker start-up (spawn, imports, warm-up) is timed apart, not as throughput.
"""

from __future__ import annotations

import argparse
import random
import time

# The batch: a few answers that all need math-verify, right and wrong, repeated (2-3 ms each).
REPEATED = [
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
    ("2\\pi", "\\pi \\cdot 2"),
    ("\\left(1, 2\\right)", "(1,2)"),
    ("\\frac{3}{4}x", "0.75x"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\sqrt{8}", "2\\sqrt{2}"),
    ("\\sqrt{8}", "3\\sqrt{2}"),
    ("x^2+1", "(x+1)^2"),
]


def repeated_items(count: int, symbolic_fraction: float = 1.0, seed: int = 0) -> list[tuple[str, str]]:
    """(completion, gold) pairs drawn from `REPEATED`, or plain numbers (a share of 1 - `symbolic_fraction`)."""
    rng = random.Random(seed)
    items = []
    for _ in range(count):
        if rng.random() < symbolic_fraction:
            pred, gold = rng.choice(REPEATED)
        else:
            gold = str(rng.randint(0, 9999))
            pred = gold if rng.random() < 0.5 else str(rng.randint(0, 9999))
        items.append((f"Some reasoning. \\boxed{{{pred}}}", gold))
    return items


def group_items(count: int, symbolic_fraction: float = 1.0, seed: int = 0, group: int = 8) -> list[tuple[str, str]]:
    """(completion, gold) pairs as GRPO makes them: groups of `group` completions per problem, each
    one of a few answers (right in two forms, or wrong), so answers repeat within a group. A share of
    `symbolic_fraction` of the problems has a symbolic answer that needs math-verify; the others a
    plain number that the Grader decides exactly."""
    rng = random.Random(seed)

    def symbolic(a: int, b: int) -> tuple[str, list[str]]:
        """A gold answer and the completions' candidates for it: two right forms, one wrong."""
        return rng.choice(
            [
                (
                    f"\\frac{{{a}}}{{\\sqrt{{2}}}}",
                    [f"\\frac{{{a}\\sqrt{{2}}}}{{2}}", f"\\frac{{{a}\\sqrt 2}}{{2}}", f"{a}\\sqrt{{2}}"],
                ),
                (f"\\pi \\cdot {a}", [f"{a}\\pi", f"{a} \\pi", f"{a + 1}\\pi"]),
                (f"(x+{a})^2", [f"x^2+{2 * a}x+{a * a}", f"(x + {a})^{{2}}", f"x^2+{a * a}"]),
                (f"({a},{b})", [f"\\left({a}, {b}\\right)", f"( {a} , {b} )", f"({b}, {a})"]),
                (f"\\sqrt{{{a * a * b}}}", [f"{a}\\sqrt{{{b}}}", f"{a} \\sqrt{b}", f"{a}\\sqrt{{{b + 1}}}"]),
                (f"{b}i+{a}", [f"{a}+{b}i", f"{a} + {b} i", f"{a}-{b}i"]),
                (f"\\frac{{{a}x}}{{{b + 1}}}", [f"\\frac{{{a}}}{{{b + 1}}}x", f"\\frac{{{a}}}{{{b + 1}}} x", f"{a}x"]),
            ]
        )

    items: list[tuple[str, str]] = []
    while len(items) < count:
        if rng.random() < symbolic_fraction:
            gold, candidates = symbolic(rng.randint(1, 30), rng.randint(2, 7))
        else:
            gold = str(rng.randint(0, 9999))
            candidates = [gold, f"{int(gold):,}", str(int(gold) + 1)]
        for _ in range(min(group, count - len(items))):
            items.append((f"Some reasoning. \\boxed{{{rng.choice(candidates)}}}", gold))
    return items


def _sched(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of process `pid` so far, from
    /proc/<pid>/schedstat (Linux); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run_ns, wait_ns, _ = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    return run_ns / 1e9, wait_ns / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument(
        "--workload",
        choices=["repeated", "groups"],
        default="repeated",
        help="repeated: a few pairs, 2-3 ms each in math-verify (the issue's batch); "
        "groups: varied answers in groups of 8 per problem, 5-25 ms each",
    )
    ap.add_argument("--symbolic-fraction", type=float, default=1.0, help="share of answers that need math-verify")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="each round times every row once, in turn; medians are shown")
    ap.add_argument("--no-chunk-1", action="store_true", help="skip the one-answer-per-message row")
    args = ap.parse_args()

    import os
    import statistics

    from math_verify import parse, verify

    from memrl.grading import GradeItem, Grader, last_boxed
    from memrl.grading import grader as grader_module
    from memrl.grading.math import judge_math

    make = repeated_items if args.workload == "repeated" else group_items
    items = make(args.items, args.symbolic_fraction)
    batch = [GradeItem("math", t, g) for t, g in items]
    chunk = grader_module.MAX_CHUNK
    # the main process warms up as the workers do, so that neither side pays first-use costs
    for pred, gold in grader_module._WARM_UP:
        judge_math(pred, gold, 60.0)
    in_process = Grader(num_workers=0)
    pool = Grader(num_workers=args.workers)
    t0 = time.perf_counter()
    pool.grade_batch([GradeItem("math", "\\boxed{y+1}", "1+y")] * max(1, args.workers))
    startup = time.perf_counter() - t0
    pids = [os.getpid()] + [w.proc.pid for w in pool._workers]
    base_name = "math-verify direct, sequential (baseline)"

    def baseline() -> list[bool]:
        return [bool(verify(parse(f"${gold}$"), parse(f"${last_boxed(text)}$"))) for text, gold in items]

    def graded(grader: Grader, max_chunk: int) -> list[bool]:
        grader_module.MAX_CHUNK = max_chunk
        return [r.correct for r in grader.grade_batch(batch)]

    rows = {base_name: baseline}
    rows["memrl Grader, num_workers=0"] = lambda: graded(in_process, chunk)
    if args.workers > 0:
        rows[f"memrl Grader, num_workers={args.workers}"] = lambda: graded(pool, chunk)
        if not args.no_chunk_1:
            rows[f"memrl Grader, num_workers={args.workers}, chunk=1"] = lambda: graded(pool, 1)
    times: dict[str, list[float]] = {name: [] for name in rows}
    # per round: (CPU seconds of all processes, estimated seconds on an idle machine)
    sched: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    # per round, pool rows: (the parent's CPU seconds, the workers' idle seconds, summed over workers)
    where: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    verdicts: dict[str, list[bool]] = {}
    try:
        for _ in range(args.rounds):
            for name, run in rows.items():
                workers = pids[1:] if "num_workers=0" not in name and name != base_name else []
                before = [_sched(p) for p in pids]
                t0 = time.perf_counter()
                verdicts[name] = run()
                wall = time.perf_counter() - t0
                times[name].append(wall)
                after = [_sched(p) for p in pids]
                if None in before or None in after:
                    continue
                used = {p: (a[0] - b[0], a[1] - b[1]) for p, b, a in zip(pids, before, after)}
                cpu = sum(run_s for run_s, _ in used.values())
                if workers:
                    # on an idle machine: the slowest worker's CPU time plus the time it sat idle
                    # (neither running nor waiting for a CPU: waiting for work, which the load only
                    # stretches), and no less than all processes' CPU time spread over all cores
                    slowest = max(used[p][0] + (wall - used[p][0] - used[p][1]) for p in workers)
                    idle_machine = max(slowest, cpu / min(os.cpu_count() or 1, len(pids)))
                    idle = sum(wall - used[p][0] - used[p][1] for p in workers)
                    where[name].append((used[pids[0]][0], idle))
                else:
                    idle_machine = used[pids[0]][0]
                sched[name].append((cpu, idle_machine))
    finally:
        pool.close()
    truth = verdicts[base_name]
    print(
        f"{len(items)} answers ({args.workload}), {args.symbolic_fraction:.0%} need math-verify, {sum(truth)} right; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; median of {args.rounds} rounds"
    )
    head = f"{'grader':<44} {'answers/s':>9} {'vs baseline':>11} {'CPU ms/answer':>13} {'idle: answers/s':>15} {'ratio':>6} {'agree':>6}"
    print(head)
    for name in rows:
        dt = statistics.median(times[name])
        # the ratio within each round (the load changes between rounds), then the median
        ratio = statistics.median(b / t for b, t in zip(times[base_name], times[name]))
        agree = sum(a == b for a, b in zip(verdicts[name], truth)) / len(items)
        if sched[name] and sched[base_name]:
            cpu_ms = f"{statistics.median(c for c, _ in sched[name]) / len(items) * 1000:.2f}"
            est = statistics.median(len(items) / t for _, t in sched[name])
            est_ratio = statistics.median(b / t for (_, b), (_, t) in zip(sched[base_name], sched[name]))
            est_s, est_r = f"{est:.0f}", f"{est_ratio:.2f}x"
        else:
            cpu_ms = est_s = est_r = "n/a"
        print(f"{name:<44} {len(items) / dt:>9.0f} {ratio:>10.2f}x {cpu_ms:>13} {est_s:>15} {est_r:>6} {agree:>6.1%}")
    for name in rows:
        if where[name]:
            parent_ms = statistics.median(p for p, _ in where[name]) / len(items) * 1000
            idle_ms = statistics.median(i for _, i in where[name]) / len(items) * 1000
            print(
                f"{name}: the parent's CPU {parent_ms:.2f} ms/answer (extraction, exact check, messages); "
                f"workers idle, waiting for work, {idle_ms:.2f} ms/answer"
            )
    print(f"start-up of {args.workers} workers (spawn, imports, warm-up): {startup:.1f} s, not in the rates above")
    print(
        "answers/s, vs baseline: measured wall time (on a busy machine the processes of one session share one\n"
        "  CPU share, so parallel workers gain little there). CPU ms/answer: the parent and its workers together.\n"
        f"  idle: the rate and ratio this machine ({os.cpu_count()} cores) would reach with nothing else running,\n"
        "  from /proc/<pid>/schedstat: the slowest worker's CPU time plus the time it sat idle waiting for\n"
        "  work, and no less than the CPU time of all processes spread over the cores."
    )


if __name__ == "__main__":
    main()
