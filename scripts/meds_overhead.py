"""MEDS' cost, read from run directories: where the time of its steps goes (the issue's target: features +
clustering <= 5% of step time in the default toy run; the paper reports about +15-20% over DAPO).

    python scripts/meds_overhead.py outputs/toy_meds/multiruns/<date>/<job> [more run dirs]

Per run: the anchor search (before the scoring pass), the layer-logit features and the memory's kNN
assignment + HDBSCAN refits (inside the reward shaping), each as a share of the summed step time; and the
no-grad scoring pass that carries the hidden states. That pass exists anyway when a step makes several
optimiser steps (the paper's 32 mini-batches); the toy's DAPO makes one, so there MEDS causes it, and it is
reported separately.
"""

from __future__ import annotations

import sys
from pathlib import Path

from memrl.utils.io import read_jsonl_tolerant


def shares(rows: list[dict[str, float]]) -> dict[str, float]:
    """Seconds summed over steps: step, anchors, features, clustering, scoring pass; the first step apart
    (it imports hdbscan and compiles its code)."""
    total = {"step": 0.0, "anchors": 0.0, "features": 0.0, "clustering": 0.0, "scoring_pass": 0.0}
    for r in rows:
        total["step"] += r.get("perf/time_per_step", 0.0)
        total["anchors"] += r.get("timing_s/hidden_positions", 0.0)
        total["features"] += r.get("meds/time_features_s", 0.0)
        total["clustering"] += r.get("meds/time_cluster_s", 0.0)
        total["scoring_pass"] += r.get("timing_s/old_log_prob", 0.0)
    return total


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for arg in argv:
        run = Path(arg)
        rows = [r for r in read_jsonl_tolerant(run / "train" / "metrics.jsonl") if "meds/time_total_s" in r]
        if not rows:
            print(f"{run}: no MEDS step in train/metrics.jsonl")
            continue
        for label, part in (("all steps", rows), ("without step 1", rows[1:])):
            t = shares(part)
            if not t["step"]:
                continue
            meds = t["anchors"] + t["features"] + t["clustering"]
            print(
                f"{run} ({label}, {len(part)} steps, {t['step']:.1f}s): MEDS {100 * meds / t['step']:.2f}% "
                f"(anchors {100 * t['anchors'] / t['step']:.2f}%, features {100 * t['features'] / t['step']:.2f}%, "
                f"clustering {100 * t['clustering'] / t['step']:.2f}%); scoring pass "
                f"{100 * t['scoring_pass'] / t['step']:.1f}%"
            )
        last = rows[-1]
        print(
            f"  memory at the end: {int(last['meds/memory_vectors'])} vectors in {int(last['meds/memory_keys'])} "
            f"(prompt, correctness) memories"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
