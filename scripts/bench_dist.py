"""Benchmark of memrl.dist on this CPU: 1 process vs 2 FSDP2 processes (gloo) on the tiny model.

    python scripts/bench_dist.py                       # 6 timed steps of a 16 x 64-token global batch
    python scripts/bench_dist.py --steps 10 --batch 32 --seq-len 128

Both runs train the same global batch from the same weights: the 1-process baseline is the plain model,
the 2-process run shards it with FSDP2 and scales each rank's loss by the global token count. Printed:
the mean step time of each (after one untimed warm-up step), their ratio, the largest parameter difference
at the end (a correctness check: the 2-process result must equal the baseline to float tolerance), and the
time to save and load one DCP checkpoint of model + AdamW state on 2 ranks. Each rank runs one thread.

On a 2-core machine shared with other work, 2 processes compete with each other and everything else for
the cores and exchange every layer's parameters and gradients through gloo over loopback: expect the
2-process step to be *slower*. The number that matters on GPUs (NCCL, one device per rank) is not measured
here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(a: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from memrl.config.schema import DistConfig
    from memrl.dist.checkpoint import DistCheckpointer, full_state_dict
    from memrl.dist.env import detect_env
    from memrl.dist.runtime import (
        barrier,
        broadcast_object,
        build_mesh,
        dp_loss_scale,
        global_sum,
        init_distributed,
        shutdown,
    )
    from memrl.dist.shard import shard_model
    from memrl.policy.tiny import ensure_tiny_model

    torch.set_num_threads(1)
    env = detect_env()
    model = AutoModelForCausalLM.from_pretrained(ensure_tiny_model(progress=False), dtype=torch.float32)
    model.train()
    settings = DistConfig()
    sharded = env.world_size > 1
    if sharded:
        ctx = init_distributed(settings, env)
        shard_model(model, build_mesh(settings, ctx), settings)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, vocab, (a.batch, a.seq_len), generator=g)
    local = batch[env.rank :: env.world_size]

    def step() -> None:
        logits = model(input_ids=local).logits
        loss_sum = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, vocab), local[:, 1:].reshape(-1), reduction="sum"
        )
        count = local[:, 1:].numel()
        (loss_sum * dp_loss_scale(global_sum(count), env.world_size)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up, untimed
    barrier()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    barrier()
    step_s = (time.perf_counter() - t0) / a.steps
    out = {"world_size": env.world_size, "step_s": step_s}
    if sharded:
        # rank 0 decides the folder, every rank writes its shards into it
        folder = broadcast_object(tempfile.mkdtemp(dir=a.out) if env.rank == 0 else None)
        ckpt = DistCheckpointer(Path(folder) / "train")
        t0 = time.perf_counter()
        path = ckpt.save(1, model, opt)
        out["save_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ckpt.load(path, model, opt)
        barrier()
        out["load_s"] = time.perf_counter() - t0
        out["ckpt_mb"] = sum(f.stat().st_size for f in (path / "dcp").iterdir()) / 1e6
    full = full_state_dict(model) if sharded else model.state_dict()
    if env.rank == 0:
        torch.save({k: v.detach().cpu() for k, v in full.items()}, Path(a.out) / f"params{env.world_size}.pt")
        (Path(a.out) / f"bench{env.world_size}.json").write_text(json.dumps(out))
    if sharded:
        shutdown()


def run(cmd: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="timed optimiser steps")
    ap.add_argument("--batch", type=int, default=16, help="sequences per global batch")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)

    import torch

    from memrl.policy.tiny import ensure_tiny_model

    ensure_tiny_model()
    args = ["--child", "--steps", str(a.steps), "--batch", str(a.batch), "--seq-len", str(a.seq_len)]
    with tempfile.TemporaryDirectory() as out:
        run([sys.executable, __file__, *args, "--out", out])
        run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, *args,
             "--out", out])  # fmt: skip
        one = json.loads(Path(out, "bench1.json").read_text())
        two = json.loads(Path(out, "bench2.json").read_text())
        p1, p2 = torch.load(Path(out, "params1.pt")), torch.load(Path(out, "params2.pt"))
    diff = max((p1[k] - p2[k]).abs().max().item() for k in p1)
    cores = len(os.sched_getaffinity(0))
    print(f"tiny model, global batch {a.batch} x {a.seq_len} tokens, {a.steps} timed steps, {cores} cores visible")
    print(f"  1 process (plain model):     {one['step_s'] * 1e3:8.1f} ms/step")
    print(f"  2 processes (FSDP2, gloo):   {two['step_s'] * 1e3:8.1f} ms/step")
    print(f"  ratio 2-process / 1-process: {two['step_s'] / one['step_s']:8.2f}")
    print(f"  max |param difference| after {a.steps + 1} steps: {diff:.2e}")
    print(
        f"  DCP checkpoint on 2 ranks ({two['ckpt_mb']:.1f} MB model + AdamW): save {two['save_s']:.2f} s, "
        f"load {two['load_s']:.2f} s"
    )
    print(f"  load average now: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
