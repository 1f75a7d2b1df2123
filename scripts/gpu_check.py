"""The GPU check of docs/scaling.md: a ~0.5B random-initialised Qwen2 trained a few steps by `memrl train`.

Runs, each a separate `memrl train` (rollout=hf, GRPO, the synthetic task; bf16 autocast on the GPU,
float32 parameters and AdamW):

1. one process: a few steps with a checkpoint at step 2;
2. the same under `torchrun --standalone --nproc_per_node=1` with `dist=fsdp2` (FSDP2 on CUDA and NCCL,
   one rank; skipped with --no-fsdp2);
3. SIGKILL after the step-2 checkpoint of the same run as 2 (or 1 with --resume-mode single), then the
   same command again, which resumes; its steps after the checkpoint are compared with the uninterrupted
   run's.

It prints, per run: tokens per second and step time (memrl's perf/* metrics, steps after the first), an
MFU estimate of the policy update (6 x parameters x trained tokens / update time / the GPU's peak bf16
dense FLOP/s; attention's quadratic term left out), and the peak GPU memory torch allocated and reserved.
A model is built from a config (no download) with a byte-level tokenizer trained in a second on memrl's
synthetic corpus (`memrl.policy.tiny.train_tokenizer`), so nothing needs the network.

    python scripts/gpu_check.py [--out DIR] [--steps N] [--cpu --small] [--no-fsdp2] [--resume-mode fsdp2|single]

`--cpu --small` is the reduced mode for a machine without a GPU (a ~3M-parameter model, gloo): it runs the
same code paths end to end in about two minutes and checks the script, not the speed. `scripts/gpu_check.sh`
installs the wheels of `make gpu-wheels` first; the whole check is meant to end within 8 minutes on one H200.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the peak bf16 dense tensor FLOP/s per GPU (vendor data sheets, without sparsity)
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
# Qwen2.5-0.5B's decoder layer (hidden 896, 14 heads of 64, 2 KV heads, MLP 4864); 32 layers make ~0.48B
# parameters with the 400-token tokenizer in place of Qwen's 151,936-token embedding
SHAPES = {
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=32,
        num_attention_heads=14,
        num_key_value_heads=2,
        head_dim=64,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    ),
}


def build_model(out: Path, shape: str) -> int:
    """A random-initialised Qwen2 of `shape` with the synthetic-corpus tokenizer, saved to `out`; its size."""
    import random

    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import sft_examples
    from memrl.data.templates import INSTRUCTIONS
    from memrl.policy.tiny import train_tokenizer

    examples = sft_examples(SyntheticConfig(), random.Random(0), n=4000)
    tok = train_tokenizer([p + c for p, c in examples] + list(INSTRUCTIONS.values()), 400)
    eos = tok.eos_token_id
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        **SHAPES[shape],
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def train_args(model_dir: Path, run_dir: Path, a: argparse.Namespace, steps: int) -> list[str]:
    gpu = not a.cpu
    return [
        "train",
        f"model.name_or_path={model_dir}",
        "model.dtype=float32",  # parameters and AdamW in float32, the update in bf16 autocast (trainer.compute_dtype)
        f"model.device={'cuda' if gpu else 'cpu'}",
        f"trainer={'gpu' if gpu else 'cpu'}",
        "algo=grpo",
        "reward=oracle",
        f"trainer.total_steps={steps}",
        f"trainer.train_batch_size={a.prompts}",
        f"trainer.gen_batch_size={a.prompts}",
        f"trainer.ppo_mini_batch_size={a.prompts}",
        f"trainer.micro_batch_size={a.prompts * a.n}",
        "trainer.lr=1e-5",
        "trainer.lr_warmup_steps=0",
        "trainer.save_freq=2",
        "trainer.max_ckpt_to_keep=null",
        "trainer.test_freq=0",  # no validation: this measures training
        "trainer.val_before_train=false",
        "trainer.initial_eval=false",
        "trainer.final_eval=false",
        "trainer.progress=false",
        f"trainer.gradient_checkpointing={str(gpu).lower()}",
        f"rollout.n={a.n}",
        f"rollout.max_new_tokens={a.max_new_tokens}",
        f"rollout.batch_size={a.prompts}",
        f"hydra.run.dir={run_dir}",
    ]


def env(peak_dir: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        PYTHONPATH=os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        TOKENIZERS_PARALLELISM="false",
        MEMRL_PEAK_DIR=str(peak_dir),
    )
    return e


def command(args: list[str], fsdp2: bool) -> list[str]:
    """`memrl train ...` through scripts/gpu_check_run.py (memrl's CLI plus a peak-memory record), alone or
    under torchrun with one process and dist=fsdp2 (what `torchrun --no-python memrl train ... dist=fsdp2` runs)."""
    runner = str(REPO / "scripts" / "gpu_check_run.py")
    if not fsdp2:
        return [sys.executable, runner, *args]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    return [*torchrun, runner, *args, "dist=fsdp2"]


def launch(cmd: list[str], log: Path, peak_dir: Path, kill_after_ckpt: Path | None = None, limit_s: float = 420):
    """Run `cmd` (its own session) with output in `log`; SIGKILL its whole group once `kill_after_ckpt` exists."""
    peak_dir.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env(peak_dir), stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        t0 = time.time()
        while proc.poll() is None:
            if kill_after_ckpt is not None and kill_after_ckpt.exists():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "killed", time.time() - t0
            if time.time() - t0 > limit_s:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise SystemExit(f"run did not end within {limit_s} s; see {log}")
            time.sleep(0.2)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-6000:])
        raise SystemExit(f"run failed (exit {proc.returncode}); see {log}")
    return "ok", time.time() - t0


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "train" / "metrics.jsonl").read_text().splitlines() if x.strip()]


def peaks(peak_dir: Path) -> dict[str, float]:
    rec = [json.loads(p.read_text()) for p in sorted(peak_dir.glob("peak.*.json"))]
    if not rec:
        return {}
    return {k: max(r[k] for r in rec) for k in rec[0]}


def summary(name: str, run_dir: Path, peak_dir: Path, params: int, peak_flops: float | None, wall: float) -> dict:
    rows = [m for m in metrics(run_dir) if "perf/time_per_step" in m]
    steady = rows[1:] or rows  # the first step includes warm-up (CUDA kernels, allocator)
    mean = lambda k: sum(m[k] for m in steady) / len(steady)  # noqa: E731
    upd = mean("timing_s/update_actor")
    flops = 6 * params * mean("perf/total_num_tokens") / upd if upd > 0 else 0.0
    out = {
        "run": name,
        "steps": len(rows),
        "wall_s": round(wall, 1),
        "step_time_s": round(mean("perf/time_per_step"), 3),
        # all steady steps' tokens over their time (a mean of per-step ratios would overweight short steps)
        "tokens_per_s": round(
            sum(m["perf/total_num_tokens"] for m in steady) / sum(m["perf/time_per_step"] for m in steady), 1
        ),
        "gen_s": round(mean("timing_s/gen"), 3),
        "update_s": round(upd, 3),
        "update_tflops": round(flops / 1e12, 2),
        "mfu_update": round(flops / peak_flops, 4) if peak_flops else None,
        **{k: round(v, 2) for k, v in peaks(peak_dir).items()},
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "outputs" / "gpu_check"))
    ap.add_argument("--steps", type=int, default=4, help="training steps per run (a checkpoint at step 2)")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (gloo), for a machine without a GPU")
    ap.add_argument("--small", action="store_true", help="a ~3M-parameter model instead of ~0.5B")
    ap.add_argument("--no-fsdp2", action="store_true", help="skip the torchrun / dist=fsdp2 runs")
    ap.add_argument(
        "--resume-mode",
        choices=["fsdp2", "single"],
        default="fsdp2",
        help="which run is killed after its step-2 checkpoint and resumed",
    )
    ap.add_argument("--prompts", type=int, default=None, help="prompts per step (default 16 on GPU, 4 on CPU)")
    ap.add_argument("--n", type=int, default=None, help="rollouts per prompt (default 8 on GPU, 2 on CPU)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="(default 256 on GPU, 24 on CPU)")
    a = ap.parse_args()
    a.prompts = a.prompts or (4 if a.cpu else 16)
    a.n = a.n or (2 if a.cpu else 8)
    a.max_new_tokens = a.max_new_tokens or (24 if a.cpu else 256)
    if a.steps < 3:
        ap.error("--steps must be >= 3 (the kill comes after the step-2 checkpoint)")
    if a.no_fsdp2 and a.resume_mode == "fsdp2":
        a.resume_mode = "single"

    import torch

    gpu = not a.cpu
    if gpu and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --cpu --small on a machine without a GPU")
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = out / "runs.log"
    name = torch.cuda.get_device_name(0) if gpu else "cpu"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None) if gpu else None
    print(
        f"device: {name}; torch {torch.__version__}; peak bf16 dense: {peak / 1e12 if peak else 'unknown'} TFLOP/s",
        flush=True,
    )

    t0 = time.time()
    model_dir = out / "model"
    params = build_model(model_dir, "small" if a.small else "0.5b")
    print(
        f"model: random-initialised Qwen2, {params / 1e6:.1f}M parameters, built in {time.time() - t0:.1f} s",
        flush=True,
    )

    results = {}
    runs = [("single", False)] + ([] if a.no_fsdp2 else [("fsdp2", True)])
    for name_, fsdp2 in runs:
        run_dir, peak_dir = out / name_, out / f"{name_}.peak"
        _, wall = launch(command(train_args(model_dir, run_dir, a, a.steps), fsdp2), log, peak_dir)
        results[name_] = summary(name_, run_dir, peak_dir, params, peak, wall)

    # SIGKILL after the step-2 checkpoint, then the same command again: it resumes from that checkpoint
    fsdp2 = a.resume_mode == "fsdp2"
    run_dir, peak_dir = out / "resume", out / "resume.peak"
    cmd = command(train_args(model_dir, run_dir, a, a.steps), fsdp2)
    status, _ = launch(cmd, log, peak_dir, kill_after_ckpt=run_dir / "train" / "latest")
    killed_at = (run_dir / "train" / "latest").read_text().strip()
    launch(cmd, log, peak_dir)
    ref = {m["step"]: m for m in metrics(out / a.resume_mode) if "perf/time_per_step" in m}
    # the last record of each step (a step the kill interrupted is logged again by the resumed run)
    after = {m["step"]: m for m in metrics(run_dir) if "perf/time_per_step" in m}
    keys = ("actor/pg_loss", "actor/grad_norm", "critic/score/mean")
    diffs = {
        k: max(abs(m[k] - ref[s][k]) for s, m in after.items() if s > 2 and k in m and k in ref.get(s, {}))
        for k in keys
        if any(k in m for s, m in after.items() if s > 2)
    }
    res = {
        "run": f"kill+resume ({a.resume_mode})",
        "kill": status,
        "latest_at_kill": killed_at,
        "steps_logged": sorted(after),
        "max_abs_diff_vs_uninterrupted_after_step_2": {k: float(f"{v:.3g}") for k, v in diffs.items()},
    }
    print(json.dumps(res), flush=True)
    if status != "killed" or sorted(after) != list(range(1, a.steps + 1)):
        raise SystemExit("the kill / resume did not happen as planned; see " + str(log))
    print(f"gpu_check: done in {time.time() - t0:.0f} s (log: {log})", flush=True)


if __name__ == "__main__":
    main()
