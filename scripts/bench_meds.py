"""MEDS' cost per RL step: DAPO vs DAPO + MEDS, same model, prompts and settings, steps interleaved.

    python scripts/bench_meds.py [--steps 12] [--warmup 3] [--prompts 16] [--threads 2]   (also in make bench)

Both trainers start from the same tiny model (separate copies), draw the same prompts with the same seed
and alternate steps (DAPO step 1, MEDS step 1, DAPO step 2, ...) so that both see the same load on a shared
machine. The pool is as large as one batch, so from the second step every prompt is a revisit and MEDS'
memory grows and is clustered every step, as late in a long run. Time per step is the median over
`--steps` steps after `--warmup` steps. Two layouts:

- one mini-batch per step (the toy's DAPO default): plain DAPO needs no scoring pass (old = current,
  detached), so MEDS adds one no-grad forward pass to carry the hidden states;
- two mini-batches per step (as the paper's 32): both sides run the scoring pass, MEDS only reads it.

Printed: the median step times, their ratio, and MEDS' own parts (anchor search, features, clustering).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path


def make_trainer(model, tok, problems, run_dir: Path, grader, mini: int, meds: bool, prompts: int):
    from memrl.config.schema import train_config
    from memrl.data.labels import GroundTruth
    from memrl.data.templates import format_prompt, resolve_style
    from memrl.meds.memory import ErrorMemory
    from memrl.rewards.base import RewardPipeline
    from memrl.rewards.meds import MEDSShaper
    from memrl.rewards.oracle import GroundTruthReward
    from memrl.rl.trainer import Trainer
    from memrl.rollout.hf_engine import HFEngine

    cfg = train_config(
        "trainer.total_steps=10000",
        f"trainer.train_batch_size={prompts}",
        f"trainer.gen_batch_size={prompts}",
        f"trainer.ppo_mini_batch_size={prompts // mini}",
        "rollout.n=8",
        "rollout.max_new_tokens=64",
        "trainer.lr=1e-4",
        "algo.clip_ratio_high=0.28",
        "algo.clip_ratio_c=10.0",
        "algo.filter_groups.enable=false",  # the same number of groups on both sides every step
        "trainer.progress=false",
        "trainer.resume=disable",
        "seed=0",
    )
    components = [GroundTruthReward()] + ([MEDSShaper(tok, ErrorMemory())] if meds else [])
    style = resolve_style("plain", tok)  # the tiny model's prompt style (conf/model/tiny.yaml)
    return Trainer(
        cfg,
        model,
        tok,
        HFEngine(model, tok),
        RewardPipeline(components),
        GroundTruth(problems, {p.id for p in problems}),
        problems,
        lambda p: format_prompt(p, tok, style, "boxed", None),
        grader,
        run_dir,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from memrl.config.schema import ModelConfig, SyntheticConfig
    from memrl.data.synthetic import load_split
    from memrl.grading import Grader
    from memrl.policy.load import load_policy
    from memrl.policy.tiny import ensure_tiny_model

    torch.set_num_threads(args.threads)
    base, tok, _ = load_policy(ModelConfig(name_or_path=str(ensure_tiny_model()), device="cpu", dtype="float32"))
    problems = load_split("train", SyntheticConfig(train_size=args.prompts))
    with Grader(num_workers=0) as grader, tempfile.TemporaryDirectory() as tmp:
        for mini in (1, 2):
            sides = {}
            for name, meds in (("dapo", False), ("dapo+meds", True)):
                torch.manual_seed(0)
                sides[name] = make_trainer(
                    copy.deepcopy(base), tok, problems, Path(tmp) / f"{name}-{mini}", grader, mini, meds, args.prompts
                )
            times: dict[str, list[float]] = {name: [] for name in sides}
            parts: list[dict[str, float]] = []
            for step in range(args.warmup + args.steps):
                for name, trainer in sides.items():
                    t = time.perf_counter()
                    result = trainer.train_step()
                    trainer.step += 1
                    if step >= args.warmup:
                        times[name].append(time.perf_counter() - t)
                        if name == "dapo+meds":
                            parts.append(result.metrics)
            base_t = statistics.median(times["dapo"])
            meds_t = statistics.median(times["dapo+meds"])
            share = {
                k: statistics.fmean(m.get(key, 0.0) for m in parts) / meds_t
                for k, key in (
                    ("anchors", "timing_s/hidden_positions"),
                    ("features", "meds/time_features_s"),
                    ("clustering", "meds/time_cluster_s"),
                    ("scoring pass", "timing_s/old_log_prob"),
                )
            }
            memory = int(parts[-1]["meds/memory_vectors"]) if parts else 0
            print(
                f"{mini} mini-batch{'es' if mini > 1 else ''} per step: DAPO {base_t:.2f}s, DAPO+MEDS {meds_t:.2f}s "
                f"per step (median of {args.steps}), ratio {meds_t / base_t:.3f}; MEDS parts of its step: "
                + ", ".join(f"{k} {100 * v:.1f}%" for k, v in share.items())
                + f"; memory {memory} vectors"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
