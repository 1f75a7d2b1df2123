"""`memrl train dist=fsdp2` under torchrun (2 gloo processes on CPU) against the same command on 1 process.

Each rank generates whole groups for its share of a step's prompts, each group under the seed of its draw
number, so the rollouts do not depend on the number of ranks; rank 0 runs the reward components and the
dynamic-sampling decision; the loss is scaled to the global counts. 2 ranks must therefore end where 1 rank
does: the same metrics and parameters within 1e-5. Runs are a few steps of the tiny model with small batches
(the launches, about a minute each on 2 cores, dominate the time); each config's pair of runs is made once per
session and shared by the tests that compare against it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

MEMRL = [sys.executable, "-m", "memrl.cli"]
# small but learning: mixed groups on the synthetic task, several optimiser steps per RL step, micro-batches
# that split the mini-batches unevenly over the ranks (the padding micro-steps run)
BASE = (
    "trainer.total_steps=3",
    "trainer.train_batch_size=4",
    "trainer.gen_batch_size=4",
    "trainer.ppo_mini_batch_size=2",
    "trainer.micro_batch_size=3",
    "trainer.lr=1e-3",
    "trainer.test_freq=0",
    "trainer.final_eval=false",
    "trainer.progress=false",
    "rollout.n=4",
    "rollout.max_new_tokens=24",
    "grading.num_workers=0",
    "dist=fsdp2",
)
CONFIGS = {
    # DAPO (the train default) with dynamic sampling: refills decided on rank 0
    "dapo": ("algo.filter_groups.enable=true", "algo.filter_groups.max_num_gen_batches=3"),
    # GRPO with the KL term (a sharded reference model) and MEDS's shaping (features per rank, memory on rank 0)
    "grpo_kl_meds": ("algo=grpo", "algo.kl_loss_coef=0.01", "meds=enabled"),
}
# per-step numbers that measure time, not the computation
NOT_COMPARED = ("timing_s/", "perf/", "meds/time_")


def train_cmd(dl, run: Path, nproc: int, *overrides: str) -> list[str]:
    """`memrl train` under torchrun with `nproc` processes, into run directory `run`."""
    cmd = [*dl.torchrun, "--standalone", f"--nproc_per_node={nproc}", "--no-python", *MEMRL, "train"]
    return [*cmd, *overrides, f"hydra.run.dir={run}"]


def train(dl, run: Path, nproc: int, *overrides: str) -> Any:
    return dl.finish(dl.start(train_cmd(dl, run, nproc, *overrides)), run)


def ok(launch: Any) -> Any:
    assert launch.returncode == 0, launch.output[-6000:]
    return launch


def final_params(run: Path) -> dict[str, torch.Tensor]:
    """The exported full weights of the run's last checkpoint (train/latest)."""
    step = (run / "train" / "latest").read_text().strip()
    return load_file(str(run / "train" / step / "policy" / "model.safetensors"))


def metrics(run: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(NOT_COMPARED)} for r in rows]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest difference over the weights both hold (a sharded export may also write the tied LM head,
    which one process's save_pretrained leaves out; tied, it equals the embedding that is compared)."""
    assert set(a) ^ set(b) <= {"lm_head.weight"}, set(a) ^ set(b)
    return max((a[k] - b[k]).abs().max().item() for k in set(a) & set(b))


def assert_same_metrics(a: list[dict[str, float]], b: list[dict[str, float]]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert sorted(ra) == sorted(rb)
        for k in ra:
            x, y = ra[k], rb[k]
            if isinstance(x, float) and math.isnan(x):
                assert isinstance(y, float) and math.isnan(y), (ra["step"], k, x, y)
            else:
                assert y == pytest.approx(x, rel=1e-4, abs=1e-5), (ra["step"], k, x, y)


@pytest.fixture(scope="session")
def train_runs(tmp_path_factory, dl):
    """(config, nproc) -> the finished run directory, each made once per session."""
    cache: dict[tuple[str, int], Path] = {}
    root = tmp_path_factory.mktemp("dist-train")

    def get(name: str, nproc: int) -> Path:
        if (name, nproc) not in cache:
            run = root / f"{name}-{nproc}"
            ok(train(dl, run, nproc, *BASE, *CONFIGS[name]))
            cache[(name, nproc)] = run
        return cache[(name, nproc)]

    return get


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_ranks_train_as_one(train_runs, name):
    one, two = train_runs(name, 1), train_runs(name, 2)
    m1, m2 = metrics(one), metrics(two)
    assert_same_metrics(m1, m2)
    # the runs trained: an update happened and moved the weights
    assert any(r.get("batch/trained_groups", 0) > 0 for r in m2)
    assert max_diff(final_params(one), final_params(two)) < 1e-5
    if name == "dapo":
        assert max(r["batch/num_gen_batches"] for r in m2) > 1  # a refill, decided on rank 0
    if name == "grpo_kl_meds":
        assert all("actor/kl_loss" in r and "meds/anchored_frac" in r for r in m2)
    # rank 0 alone wrote the shared files: one metrics line per step
    assert [r["step"] for r in m2] == [1, 2, 3]
