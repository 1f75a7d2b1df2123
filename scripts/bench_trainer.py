"""Time per RL step: memrl's `Trainer` vs TRL's `GRPOTrainer`, same model, prompts and settings, same run.

    make bench            (or: python scripts/bench_trainer.py --sizes tiny 30m --device cpu)

Needs TRL (`pip install -e ".[bench]"`; an optional extra, so that memrl itself and CI never need it).

Two model sizes: the tiny default model (~1M parameters, trained, emits EOS) and a random
Qwen2-shaped model of ~30M parameters (hidden 512, 8 layers, 8 heads of dim 64, MLP 1792, the tiny
tokenizer, tied embeddings), saved to a temporary folder so both sides load the same weights. The random
model's `generation_config.json` suppresses EOS (and TRL gets the same `suppress_tokens` through
`generation_kwargs`), so at that size both sides generate exactly `max_new_tokens` tokens per completion.

Both trainers run in one worker process per size, each on its own copy of the model (loaded from the same
folder), with the same torch thread count (`--threads`, also OMP_NUM_THREADS) and seed, on the same device.
Their steps are interleaved (TRL step 1, memrl step 1, TRL step 2, ...: TRL's loop drives and a callback runs
memrl's step at each `on_step_end`), so that adjacent steps of the two sides see the same load on a shared
machine. Time per step is the median over `--steps` steps after `--warmup` warm-up steps:

- memrl: the wall time of `Trainer.train_step()` (generate, reward, advantages, update, metrics).
- TRL: the wall time from one `on_step_end` (after the memrl step run there; `on_train_begin` for the first)
  to the next, i.e. one full iteration of the HF Trainer loop: fetch prompts, generate + reward (in
  `_prepare_inputs`), forward/backward, clip, optimizer and scheduler step, and its logging.

Tokens/s is prompt + completion tokens without padding per second (memrl `perf/total_num_tokens`; TRL
the step's increase of `num_input_tokens_seen`, the same definition). With a trained model the
completion lengths differ between sides (sampling), so the mean completion length of each side is printed.

The settings, side by side (memrl config key = TRL `GRPOConfig` field):

    prompts per step     train_batch_size = gen_batch_size = ppo_mini_batch_size = P
                         = per_device_train_batch_size / num_generations (P * G completions per device batch)
    group size G         n = num_generations
    one optimizer step   one mini-batch, one epoch, micro_batch_size = P * G (one forward/backward)
      per generation     = gradient_accumulation_steps 1, steps_per_generation 1, num_iterations 1
                         (so neither side runs a separate old-log-prob pass: old = current, detached)
    completion length    max_new_tokens = max_completion_length
    sampling             temperature 1, top_p 1, top_k 0 (off) on both; no vLLM (transformers generate)
    loss                 loss_agg_mode "token-mean" = loss_type "dapo" (sum over tokens / tokens in the batch)
    clipping             clip_ratio_low = epsilon = 0.2, clip_ratio_high = epsilon_high = 0.2,
                         dual-clip clip_ratio_c = delta = 3.0 (TRL's two-sided clip caps the ratio at delta
                         for every token; memrl's dual clip caps the loss of negative-advantage tokens at
                         c * |A|; the same function for both signs once delta > 1 + epsilon_high)
    KL                   kl_loss_coef 0 (no reference model) = beta 0 (no reference model)
    advantages           GRPO, scaled by the group std (norm_adv_by_std = scale_rewards "group")
    dynamic sampling     filter_groups False (TRL has none); mask_truncated False on both
    reward               memrl's GroundTruthReward = a TRL reward function calling the same `Grader`
                         (in-process, num_workers=0, on both sides)
    optimiser            torch.optim.AdamW, same lr, betas (0.9, 0.999), eps 1e-8, weight decay
                         (TRL optim "adamw_torch", not its default fused AdamW), grad clip 1.0,
                         constant schedule (lr_warmup_steps 0 = lr_scheduler_type "constant")
    precision            float32 parameters on both; on CUDA with --dtype auto/bfloat16 both autocast to
                         bf16 (memrl compute_dtype, TRL bf16=True); on the CPU float32 (TRL bf16=False)
    memory               no gradient checkpointing on either side (TRL defaults to it: turned off)

What differs by design and is part of what is measured: memrl's engine runs each prompt through the model
once and shares its KV cache among the G copies (`memrl.rollout.hf_engine`, same completions as G separate
copies); TRL's `generate` runs all G copies. TRL scores log-probs with its chunked fused LM head and always
computes the entropy; memrl projects the last R + 1 positions only and skips the entropy when no loss term
needs it. TRL's training forward passes no position ids (left padding shifts the positions); memrl's does.
Both run the same transformers `generate` and the same torch forward/backward, so on a CPU the ratio stays
near 1: at 30M parameters the step is matrix products (measured: generation ~1/3, forward ~1/3, backward
~1/3 of it on each side), and the gap is what the shared prompt saves plus TRL's loop overhead.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# per size: (measured steps, warm-up steps) when --steps / --warmup are not given
DEFAULT_STEPS = {"tiny": (8, 2), "30m": (4, 1)}
SIZES = ("tiny", "30m")


def build_random_model(out_dir: Path, tiny_dir: Path) -> None:
    """A random ~30M Qwen2 with the tiny tokenizer and EOS suppressed in its generation config, saved to out_dir."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    from memrl.policy.load import load_tokenizer

    hf_logging.disable_progress_bar()

    tok = load_tokenizer(str(tiny_dir))
    eos = tok.eos_token_id
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=512,
        intermediate_size=1792,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, suppress_tokens=[eos]
    )
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


# --------------------------------------------------------------------------------------------- worker


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_memrl(args: argparse.Namespace, torch, bf16: bool, problems, run_dir: Path, grader):
    """memrl's Trainer on its own copy of the model, as `memrl train` builds it (reward=oracle, no filter)."""
    from memrl.config.schema import ModelConfig, train_config
    from memrl.data.labels import GroundTruth
    from memrl.data.templates import format_prompt
    from memrl.policy.load import load_policy
    from memrl.rewards.base import RewardPipeline
    from memrl.rewards.oracle import GroundTruthReward
    from memrl.rl.trainer import Trainer
    from memrl.rollout.hf_engine import HFEngine

    model, tok, _ = load_policy(ModelConfig(name_or_path=args.model_dir, dtype="float32", device=args.device))
    model.train()
    P, G = args.prompts, args.n
    cfg = train_config(
        f"trainer.total_steps={args.warmup + args.steps}",
        f"trainer.train_batch_size={P}",
        f"trainer.gen_batch_size={P}",
        f"trainer.ppo_mini_batch_size={P}",
        "trainer.ppo_epochs=1",
        f"trainer.micro_batch_size={P * G}",
        f"rollout.n={G}",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "rollout.top_k=0",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        "algo.adv_estimator=grpo",
        "algo.norm_adv_by_std_in_grpo=true",
        "algo.clip_ratio_low=0.2",
        "algo.clip_ratio_high=0.2",
        "algo.clip_ratio_c=3.0",
        "algo.loss_agg_mode=token-mean",
        "algo.use_kl_loss=false",
        "algo.entropy_coeff=0.0",
        "algo.filter_groups.enable=false",
        "algo.mask_truncated_completions=false",
        f"trainer.lr={args.lr}",
        "trainer.lr_warmup_steps=0",
        f"trainer.weight_decay={args.weight_decay}",
        "trainer.betas=[0.9,0.999]",
        "trainer.grad_clip=1.0",
        f"trainer.compute_dtype={'bfloat16' if bf16 else 'float32'}",
        "trainer.progress=false",
        "trainer.resume=disable",
        f"seed={args.seed}",
    )
    trainer = Trainer(
        cfg,
        model,
        tok,
        HFEngine(model, tok, batch_size=P),
        RewardPipeline([GroundTruthReward()]),
        GroundTruth(problems, {p.id for p in problems}),
        problems,
        lambda p: format_prompt(p, tok, "plain"),
        grader,
        run_dir,
    )
    rows: list[dict] = []

    def step() -> None:
        _sync(torch, args.device)
        t0 = time.perf_counter()
        m = trainer.train_step().metrics
        _sync(torch, args.device)
        dt = time.perf_counter() - t0
        trainer.step += 1
        rows.append(
            {
                "time": dt,
                "tokens": m["perf/total_num_tokens"],
                "completion_len": m["response_length/mean"],
                **{k: v for k, v in m.items() if k.startswith("timing_s/")},
            }
        )

    return step, rows, sum(p.numel() for p in model.parameters())


def make_trl(args: argparse.Namespace, torch, bf16: bool, problems, out_dir: Path, grader, callback):
    """TRL's GRPOTrainer on its own copy of the model, with the settings of the mapping in the docstring."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from memrl.data.templates import format_prompt
    from memrl.grading import GradeItem
    from memrl.policy.load import load_tokenizer

    tok = load_tokenizer(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to(args.device)
    ds = Dataset.from_list(
        [
            {
                "prompt": format_prompt(p, tok, "plain"),
                "answer": p.answer,
                "domain": p.domain,
                "metadata": json.dumps(p.metadata),
            }
            for p in problems
        ]
    )

    # the same grading as memrl's GroundTruthReward: the Grader, the gold answer, the problem's domain/metadata
    def ground_truth(prompts, completions, answer, domain, metadata, **_):
        items = [GradeItem(d, c, a, json.loads(md)) for c, a, d, md in zip(completions, answer, domain, metadata)]
        return [float(r.correct) for r in grader.grade_batch(items)]

    P, G = args.prompts, args.n
    suppress = json.loads((Path(args.model_dir) / "generation_config.json").read_text()).get("suppress_tokens")
    config = GRPOConfig(
        output_dir=str(out_dir),
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=P * G,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        num_generations=G,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"suppress_tokens": suppress} if suppress else None,
        use_vllm=False,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.2,
        delta=3.0,
        scale_rewards="group",
        mask_truncated_completions=False,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=args.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        optim="adamw_torch",
        bf16=bf16,
        fp16=False,
        use_cpu=args.device == "cpu",
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
        seed=args.seed,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=ground_truth,
        args=config,
        train_dataset=ds,
        processing_class=tok,
        callbacks=[callback],
    )


def worker(args: argparse.Namespace) -> dict:
    """Both trainers in this process, their steps interleaved: TRL step i, then memrl step i, and so on.

    Adjacent steps see the same machine load (this machine may be shared), and each side keeps its own model.
    TRL drives: a callback times its steps (from one `on_step_end`, or `on_train_begin`, to the next, after the
    memrl step that ran in between) and runs memrl's step at each `on_step_end`.
    """
    import torch
    import transformers
    from transformers import TrainerCallback

    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import load_split
    from memrl.grading import Grader

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA GPU is visible")
    bf16 = args.device == "cuda" and args.dtype != "float32"
    if bf16 and args.dtype == "auto" and not torch.cuda.is_bf16_supported():
        bf16 = False
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    problems = load_split("train", SyntheticConfig())

    class Pair(TrainerCallback):
        def __init__(self) -> None:
            self.mark = 0.0
            self.times: list[float] = []
            self.logs: list[dict] = []

        def on_train_begin(self, *a, **k):
            _sync(torch, args.device)
            self.mark = time.perf_counter()

        def on_step_end(self, *a, **k):
            _sync(torch, args.device)
            self.times.append(time.perf_counter() - self.mark)
            memrl_step()
            self.mark = time.perf_counter()

        def on_log(self, a, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                self.logs.append(dict(logs))

    pair = Pair()
    with tempfile.TemporaryDirectory() as tmp, Grader(num_workers=0) as grader:
        memrl_step, memrl_rows, params = make_memrl(args, torch, bf16, problems, Path(tmp) / "memrl", grader)
        trl_trainer = make_trl(args, torch, bf16, problems, Path(tmp) / "trl", grader, pair)
        # the objects both setups made (datasets, prompts, modules) are left out of the garbage collector's
        # full passes, so that neither side's steps pay for the other's setup
        gc.collect()
        gc.freeze()
        trl_trainer.train()
    trl_rows = []
    prev = 0.0
    for t, log in zip(pair.times, pair.logs):
        tokens = float(log.get("num_tokens", 0.0))
        trl_rows.append(
            {
                "time": t,
                "tokens": tokens - prev,
                "completion_len": log["completions/mean_length"],
                "trl_step_time": log.get("step_time"),
            }
        )
        prev = tokens
    return {"memrl": memrl_rows, "trl": trl_rows, "params": params, "bf16": bf16}


# --------------------------------------------------------------------------------------------- driver


def run_worker(size: str, model_dir: Path, args: argparse.Namespace, steps: int, warmup: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--model-dir", str(model_dir), "--steps", str(steps)]
    cmd += ["--warmup", str(warmup), "--prompts", str(args.prompts), "--n", str(args.n)]
    cmd += ["--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads), "--device", args.device]
    cmd += ["--dtype", args.dtype, "--lr", str(args.lr), "--weight-decay", str(args.weight_decay)]
    cmd += ["--seed", str(args.seed)]
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"the {size} worker failed with exit code {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.verbose:
        for i, (m, t) in enumerate(zip(out["memrl"], out["trl"])):
            parts = "  ".join(f"{k[9:]} {v:.2f}" for k, v in m.items() if k.startswith("timing_s/") and v > 0)
            print(
                f"  {size:>4} step {i + 1}{' (warm-up)' if i < warmup else ''}: memrl {m['time']:.2f}s "
                f"(len {m['completion_len']:.1f}; {parts})  TRL {t['time']:.2f}s (len {t['completion_len']:.1f}; "
                f"its step_time {t['trl_step_time'] or 0:.2f})",
                flush=True,
            )
    return out


def summarize(rows: list[dict], warmup: int) -> dict:
    rows = rows[warmup:]
    if not rows:
        raise SystemExit("no step after the warm-up: raise --steps")
    return {
        "s_per_step": statistics.median(r["time"] for r in rows),
        "tok_per_s": statistics.median(r["tokens"] / r["time"] for r in rows),
        "completion_len": statistics.mean(r["completion_len"] for r in rows),
        "timing": {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith("timing_s/")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default: tiny 8, 30m 4)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: tiny 2, 30m 1)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--n", type=int, default=8, help="group size (completions per prompt)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto", help="auto: bf16 on CUDA")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of both sides")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every step")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return

    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit('bench_trainer needs TRL: pip install -e ".[bench]"') from None

    from memrl.policy.tiny import ensure_tiny_model

    tiny = ensure_tiny_model()
    load = os.getloadavg()[0]
    print(
        f"memrl Trainer vs TRL {trl.__version__} GRPOTrainer on {args.device} ({args.dtype}), {args.threads} torch "
        f"threads, steps of the two sides interleaved (this machine may be loaded by others: load average "
        f"{load:.1f} at the start); "
        f"{args.prompts} prompts x G={args.n}, max {args.max_new_tokens} new tokens, token-mean loss, beta 0, "
        f"clip 0.2, one optimizer step per generation batch",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            steps, warmup = DEFAULT_STEPS[size]
            steps = args.steps if args.steps is not None else steps
            warmup = args.warmup if args.warmup is not None else warmup
            if size == "tiny":
                model_dir = tiny
            else:
                model_dir = Path(tmp) / "random-30m"
                build_random_model(model_dir, tiny)
            out = run_worker(size, Path(model_dir), args, steps, warmup)
            res = {side: summarize(out[side], warmup) for side in ("memrl", "trl")}
            pairs = [t["time"] / m["time"] for m, t in zip(out["memrl"][warmup:], out["trl"][warmup:])]
            res["paired_ratio"] = statistics.median(pairs)
            res.update(size=size, params=out["params"], steps=steps, warmup=warmup, raw=out)
            results.append(res)

    print()
    print(
        f"{'size':>5} {'params':>7} {'memrl s/step':>13} {'TRL s/step':>11} {'TRL/memrl':>10} {'paired':>7} "
        f"{'memrl tok/s':>12} {'TRL tok/s':>10} {'memrl len':>10} {'TRL len':>8} {'steps':>6}"
    )
    for r in results:
        m, t = r["memrl"], r["trl"]
        print(
            f"{r['size']:>5} {r['params'] / 1e6:>6.1f}M {m['s_per_step']:>13.2f} {t['s_per_step']:>11.2f} {t['s_per_step'] / m['s_per_step']:>9.2f}x "
            f"{r['paired_ratio']:>6.2f}x {m['tok_per_s']:>12.0f} {t['tok_per_s']:>10.0f} {m['completion_len']:>10.1f} {t['completion_len']:>8.1f} "
            f"{r['steps']:>3}+{r['warmup']}"
        )
    print(
        "TRL/memrl: ratio of the medians, > 1: memrl is faster; paired: median of the per-step ratios (TRL step i / "
        "memrl step i, run back to back). len: mean completion tokens. steps: measured + warm-up."
    )
    for r in results:
        parts = ", ".join(f"{k[9:]} {v:.2f}" for k, v in r["memrl"]["timing"].items() if v > 0)
        print(f"memrl {r['size']} step breakdown (median s): {parts}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
