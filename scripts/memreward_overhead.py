"""MemReward's costs, read from run directories: warm-up time per stage, and the online GNN reward's share of
step time (the issue's targets: warm-up of 1,000 queries x 8 rollouts <= 3 minutes on 2 cores; online
scoring <= 5% of a step).

    python scripts/memreward_overhead.py outputs/toy_memreward/multiruns/<date>/2 [more run dirs]

A run directory needs memory/ (and graph/, gnn/ for their times); train/metrics.jsonl adds the online share.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from memrl.utils.io import read_jsonl_tolerant


def warmup_seconds(run: Path) -> dict[str, float | None]:
    """Seconds of each warm-up stage as recorded by the stages themselves (None: stage not run)."""
    out: dict[str, float | None] = {"rollout": None, "graph": None, "gnn": None}
    if (run / "memory" / "done.json").is_file():
        out["rollout"] = json.loads((run / "memory" / "done.json").read_text())["seconds"]
    if (run / "graph" / "done.json").is_file():
        out["graph"] = json.loads((run / "graph" / "done.json").read_text())["seconds"]
    if (run / "gnn" / "report.json").is_file():
        models = json.loads((run / "gnn" / "report.json").read_text())["models"]
        out["gnn"] = sum(m.get("fit_seconds", 0.0) for m in models.values())
    return out


def online_share(run: Path) -> tuple[float, float, float, float, int] | None:
    """(GNN scoring seconds, of which embedding, GNN refresh seconds, step seconds, steps) summed over
    train/metrics.jsonl."""
    rows = read_jsonl_tolerant(run / "train" / "metrics.jsonl")
    if not rows:
        return None
    gnn = sum(r.get("timing_s/gnn_reward", 0.0) for r in rows)
    embed = sum(r.get("timing_s/gnn_embed", 0.0) for r in rows)
    refresh = sum(r.get("timing_s/gnn_refresh", 0.0) for r in rows)
    step = sum(r.get("perf/time_per_step", 0.0) for r in rows)
    return gnn, embed, refresh, step, len(rows)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for arg in argv:
        run = Path(arg)
        memory = run / "memory" / "done.json"
        if not memory.is_file():
            print(f"{run}: no MemReward warm-up here (memory/done.json missing)")
            continue
        summary = json.loads(memory.read_text())["summary"]
        n_queries = sum(v["queries"] for v in summary.values())
        n_rollouts = sum(v["rollouts"] for v in summary.values())
        w = warmup_seconds(run)
        total = sum(v for v in w.values() if v is not None)
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in w.items() if v is not None)
        print(
            f"{run}: warm-up of {n_queries} queries x {n_rollouts // max(1, n_queries)} rollouts: {total:.1f}s ({parts})"
        )
        share = online_share(run)
        if share is not None:
            gnn, embed, refresh, step, steps = share
            ratio = gnn / step if step else float("nan")
            print(f"  online GNN scoring: {gnn:.1f}s of {step:.1f}s step time over {steps} steps = {100 * ratio:.1f}%")
            if embed:
                rest = gnn - embed
                print(f"    text embeddings {100 * embed / step:.1f}%, graph and model {100 * rest / step:.1f}%")
            if refresh:
                print(f"  memory growth refreshes: {refresh:.1f}s = {100 * refresh / step:.1f}% of step time")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
