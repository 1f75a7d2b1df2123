"""Math grading throughput: memrl's Grader vs plain sequential math-verify, on the same answers.

    make bench            (or: python scripts/bench_grading.py --items 2000)

The answers mix the common case (plain numbers, as the tiny model and GSM8K produce) with LaTeX that
needs symbolic checking. The baseline is what most RL code does: `verify(parse(gold), parse(pred))`
for every completion, sequentially in the main process. Prints items per second and the ratios.
"""

from __future__ import annotations

import argparse
import random
import time


def make_items(count: int, symbolic_fraction: float, seed: int = 0) -> list[tuple[str, str]]:
    """(completion, gold) pairs: numeric ones, and symbolic ones that need math-verify."""
    rng = random.Random(seed)
    symbolic = [
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
        ("2\\pi", "2 \\pi"),
        ("(1, 2)", "(1,2)"),
        ("\\frac{3}{4}", "0.75"),
        ("x^2+2x+1", "(x+1)^2"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
    ]
    items = []
    for _ in range(count):
        if rng.random() < symbolic_fraction:
            pred, gold = rng.choice(symbolic)
        else:
            gold = str(rng.randint(0, 9999))
            pred = gold if rng.random() < 0.5 else str(rng.randint(0, 9999))
        items.append((f"Some reasoning. \\boxed{{{pred}}}", gold))
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--symbolic-fraction", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from math_verify import parse, verify

    from memrl.grading import GradeItem, Grader, last_boxed

    items = make_items(args.items, args.symbolic_fraction)
    t0 = time.perf_counter()
    baseline = [bool(verify(parse(f"${gold}$"), parse(f"${last_boxed(text)}$"))) for text, gold in items]
    t_base = time.perf_counter() - t0

    rows = [("math-verify, sequential (baseline)", t_base, baseline)]
    for workers in (0, args.workers):
        with Grader(num_workers=workers) as grader:
            grader.grade_batch([GradeItem("math", "\\boxed{1}", "1")])  # start-up is not part of throughput
            t0 = time.perf_counter()
            got = [r.correct for r in grader.grade_batch([GradeItem("math", t, g) for t, g in items])]
            rows.append((f"memrl Grader, num_workers={workers}", time.perf_counter() - t0, got))

    print(f"{len(items)} answers, {args.symbolic_fraction:.0%} symbolic")
    print(f"{'grader':<38} {'items/s':>9} {'vs baseline':>12} {'agree':>7}")
    for name, dt, got in rows:
        agree = sum(a == b for a, b in zip(got, baseline)) / len(items)
        print(f"{name:<38} {len(items) / dt:>9.0f} {t_base / dt:>11.2f}x {agree:>6.1%}")


if __name__ == "__main__":
    main()
