"""One process of the distributed tests (started by torchrun, or alone for the 1-process reference).

Trains the tiny model for a few optimiser steps on a fixed global batch of random token sequences of
unequal lengths (so ranks hold different token counts), with memrl.dist: FSDP2 over all ranks, the
global-token-count loss scaling, clip_grad_norm_ read with full_tensor(), AdamW + a warm-up schedule,
DCP checkpoints. Rank 0 writes `<out>/result.json` (per-step loss and grad norm) and `<out>/params.pt`
(the full state dict after the last step).

    worker.py --out DIR --steps N [--start-from CKPT] [--save-at S] [--kill-after-save] [--rng-weights]
              [--export DIR] [--fail-rank R] [--hang-rank R --timeout-s T] [--async-save] [--launch-time]
              [--no-shard] [--naive-mean]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from memrl.config.schema import DistConfig
from memrl.dist import checkpoint as dcp_ckpt
from memrl.dist.env import agree_launch_time, detect_env
from memrl.dist.runtime import (
    build_mesh,
    dp_loss_scale,
    global_sum,
    grad_norm_value,
    init_distributed,
    shutdown,
)
from memrl.dist.shard import shard_model
from memrl.policy.tiny import ensure_tiny_model
from memrl.rl.checkpoint import latest_checkpoint

GLOBAL_BATCH = 8
SEED = 0


def global_batch(step: int, vocab: int) -> list[torch.Tensor]:
    """The step's sequences, the same in every process whatever the world size."""
    g = torch.Generator().manual_seed(1000 + step)
    lengths = torch.randint(6, 25, (GLOBAL_BATCH,), generator=g)
    return [torch.randint(0, vocab, (int(n),), generator=g) for n in lengths]


def local_loss(model, seqs: list[torch.Tensor], pad: int, rng_weights: bool) -> tuple[torch.Tensor, int]:
    """The sum of per-token losses over this rank's sequences (right-padded), and their token count."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        labels[i, : len(s)] = s
    logits = model(input_ids=ids).logits.float()
    tok = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none"
    )
    mask = labels[:, 1:].reshape(-1) != -100
    if rng_weights:  # consumes this rank's torch RNG: resume must restore it per rank
        tok = tok * (0.5 + torch.rand(tok.shape))
    return (tok * mask).sum(), int(mask.sum())


@record
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--resume", action="store_true", help="continue from <out>/train/latest")
    ap.add_argument("--save-at", type=int, action="append", default=[])
    ap.add_argument("--kill-after-save", action="store_true")
    ap.add_argument("--rng-weights", action="store_true")
    ap.add_argument("--export", default=None)
    ap.add_argument("--fail-rank", type=int, default=None)
    ap.add_argument("--async-save", action="store_true")
    ap.add_argument("--launch-time", action="store_true")
    ap.add_argument("--no-shard", action="store_true", help="plain model in one process (the reference)")
    ap.add_argument("--naive-mean", action="store_true", help="each rank's own token mean (the wrong scaling)")
    ap.add_argument("--hang-rank", type=int, default=None)
    ap.add_argument("--timeout-s", type=int, default=600)
    ap.add_argument("--replicate", type=int, default=1, help="dist.mesh.replicate (HSDP when > 1)")
    ap.add_argument("--cpu-offload", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    env = detect_env()

    if a.launch_time:
        t = agree_launch_time(env)
        (out / f"launch_time.rank{env.rank}").write_text(t.isoformat())
        return

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_tiny_model(progress=False)
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(SEED + env.rank)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.train()
    settings = DistConfig(timeout_s=a.timeout_s, cpu_offload=a.cpu_offload)
    settings.mesh.replicate = a.replicate
    ctx = None
    if not a.no_shard:
        ctx = init_distributed(settings, env)
        shard_model(model, build_mesh(settings, ctx), settings)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    ckpt = dcp_ckpt.DistCheckpointer(out / "train", async_save=a.async_save, keep=2)

    start, history = 0, []
    if a.resume:
        state = ckpt.load(latest_checkpoint(out / "train"), model, opt, sched)
        start = state["trainer"]["step"]
        history = state["trainer"]["history"]
        if env.rank == 0:
            assert state["rewards"] == {"memory": list(range(start))}, state["rewards"]

    world, rank = env.world_size, env.rank
    for step in range(start, a.steps):
        if a.fail_rank == rank and step == 1:
            raise RuntimeError(f"deliberate failure on rank {rank}")
        if a.hang_rank == rank and step == 1:
            time.sleep(3600)  # stuck: the others' next collective times out
        seqs = global_batch(step, len(tokenizer))[rank::world]
        loss_sum, count = local_loss(model, seqs, tokenizer.pad_token_id, a.rng_weights)
        total = global_sum(count)
        loss = loss_sum / count if a.naive_mean else loss_sum * dp_loss_scale(total, world)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        sched.step()
        history.append({"step": step + 1, "loss": global_sum(loss_sum.item()) / total, "grad_norm": norm})
        if step + 1 in a.save_at:
            ckpt.save(
                step + 1,
                model,
                opt,
                sched,
                trainer_state={"history": history},
                reward_state={"memory": list(range(step + 1))},
            )
            if a.kill_after_save:
                ckpt.wait()
                os.kill(os.getpid(), signal.SIGKILL)
    ckpt.close()

    full = dcp_ckpt.full_state_dict(model) if ctx is not None else model.state_dict()
    if a.export:
        dcp_ckpt.export_hf(model, Path(a.export), tokenizer)
    if rank == 0:
        torch.save({k: v.detach().cpu() for k, v in full.items()}, out / "params.pt")
        (out / "result.json").write_text(json.dumps({"world_size": world, "history": history}))
    shutdown()


if __name__ == "__main__":
    sys.exit(main())
