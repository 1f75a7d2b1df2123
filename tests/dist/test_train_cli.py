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
# validation (greedy and val_n=4 samples) at steps 2 and 3, the initial and the final evaluation (greedy and 4
# samples at temperature 1): 5 problems in engine batches of 2, so the 3 batches split unevenly over 2 ranks
# (rank 1 runs a padding batch); they replace BASE's test_freq=0 and final_eval=false
EVALUATION = (
    "trainer.test_freq=2",
    "trainer.val_n=4",
    "data.val_set.limit=5",
    "trainer.final_eval=true",
    "eval.limit=5",
    "eval.n=4",
    "eval.temperature=1.0",
    "rollout.batch_size=2",
)
CONFIGS = {
    # DAPO (the train default) with dynamic sampling: refills decided on rank 0
    "dapo": ("algo.filter_groups.enable=true", "algo.filter_groups.max_num_gen_batches=3"),
    # GRPO with the KL term (a sharded reference model) and MEDS's shaping (features per rank, memory on rank 0)
    # (8 training queries: prompts come back across steps, so the memory has past errors to penalise); with
    # EVALUATION: validation, the initial and the final evaluation, split over the ranks
    "grpo_kl_meds": (
        "algo=grpo",
        "algo.kl_loss_coef=0.01",
        "meds=enabled",
        "data.synthetic.train_size=8",
        *EVALUATION,
    ),
    # MemReward: the warm-up (memory, graph, GNN) on rank 0 with the unsharded policy, then the GNN's rewards
    # for the unlabelled queries and its online refresh on rank 0 (tests/stages/test_warmup.py's small sizes)
    "memreward": (
        "reward=memreward",
        "data.synthetic.train_size=40",
        "reward.label_ratio=0.25",
        "reward.memreward.val_limit=6",
        "reward.memreward.report_queries=6",
        "reward.memreward.warmup.n=4",
        "reward.memreward.gnn.hidden=16",
        "reward.memreward.gnn.heads=2",
        "reward.memreward.gnn.max_epochs=20",
        "reward.memreward.grow_memory=true",
        "reward.memreward.refresh_every=1",
        # the GNN's probability as the reward: scores differ inside a group, so the updates do something
        "reward.memreward.reward_mode=soft",
        "algo.filter_groups.enable=false",
    ),
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
            own = {o.split("=")[0] for o in CONFIGS[name]}
            ok(train(dl, run, nproc, *(o for o in BASE if o.split("=")[0] not in own), *CONFIGS[name]))
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
    assert any(r.get("batch/trained_groups", 0) > 0 and r["actor/grad_norm"] > 0 for r in m2)
    assert max_diff(final_params(one), final_params(two)) < 1e-5
    if name == "dapo":
        assert max(r["batch/num_gen_batches"] for r in m2) > 1  # a refill, decided on rank 0
    if name == "grpo_kl_meds":
        assert all("actor/kl_loss" in r and "meds/anchored_frac" in r for r in m2)
    if name == "memreward":
        # the GNN judged unlabelled queries, and label accounting is rank 0's (only labelled queries read)
        summaries = [json.loads((r / "train" / "summary.json").read_text())["labels"] for r in (one, two)]
        assert summaries[0] == summaries[1]
        assert 0 < summaries[1]["train_labels_read"] <= summaries[1]["labelled_train_queries"]
    # rank 0 alone wrote the shared files: one metrics line per step
    assert [r["step"] for r in m2] == [1, 2, 3]


def eval_files(run: Path) -> dict[str, Any]:
    """The run's evaluation files by kind (results_initial, samples_synthetic_final, ...): results without their
    clock fields and the config (whose run directory differs), samples as written."""
    out: dict[str, Any] = {}
    for path in sorted((run / "eval").iterdir()):
        kind = path.name.rsplit("_", 1)[0]  # the name without its timestamp
        if path.suffix == ".jsonl":
            out[kind] = [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".json":
            r = json.loads(path.read_text())
            out[kind] = {
                "settings": r["settings"],
                "overall": r["overall"],
                "benchmarks": {b: {k: v for k, v in m.items() if k != "seconds"} for b, m in r["benchmarks"].items()},
            }
    return out


@pytest.mark.timeout(1200)
def test_two_ranks_evaluate_as_one(train_runs):
    """Validation, the initial and the final evaluation split their engine batches over the ranks, rank 0
    gathers the graded samples: greedy and sampled numbers and the samples files equal those of 1 rank."""
    one, two = train_runs("grpo_kl_meds", 1), train_runs("grpo_kl_meds", 2)
    # validation: greedy and pass@k (compared with the other metrics by test_two_ranks_train_as_one)
    val = [{k: v for k, v in r.items() if k.startswith("val/")} for r in metrics(two)]
    assert [sorted(v) for v in val if v] == [
        sorted(["val/greedy_acc", "val/mean@4", *(f"val/pass@{k}" for k in (1, 2, 4))])
    ] * 2
    assert [v for v in val if v] == [
        {k: v for k, v in r.items() if k.startswith("val/")} for r in metrics(one) if "val/greedy_acc" in r
    ]
    a, b = eval_files(one), eval_files(two)
    assert sorted(a) == sorted(b) and len(a) == 4, sorted(b)  # results and samples, initial and final
    for kind in a:
        assert a[kind] == b[kind], kind
    final = next(v for k, v in b.items() if k.startswith("results_final"))["benchmarks"]["synthetic"]
    assert final["n_problems"] == 5 and final["n"] == 4 and set(final["pass@k"]) == {"1", "2", "4"}
    samples = next(v for k, v in b.items() if k.startswith("samples_synthetic_final"))
    assert [s["mode"] for s in samples] == ["greedy"] * 5 + ["sample"] * 20


def _wait_for_checkpoint(proc: Any, run: Path, deadline_s: float = 300) -> None:
    """Poll until the run's train/latest names a complete checkpoint (or fail: the launch ended or hangs)."""
    latest = run / "train" / "latest"
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if latest.exists() and (run / "train" / latest.read_text().strip() / "trainer_state.json").exists():
            return
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended (rc {proc.returncode}) before its first checkpoint:\n{proc.stdout.read()[-4000:]}"
            )
        time.sleep(0.2)
    pytest.fail(f"no checkpoint within {deadline_s} s")


@pytest.fixture(scope="session")
def killed_run(tmp_path_factory, dl):
    """The DAPO run on 2 ranks, checkpointing every step (DCP async save), SIGKILLed (agent and both ranks)
    after its first complete checkpoint; a copy of its directory at that moment."""
    import shutil

    run = tmp_path_factory.mktemp("dist-killed") / "run"
    # async save too: the shards are written in the background while the next step runs
    overrides = ("trainer.save_freq=1", "trainer.checkpoint.async_save=true")
    proc = dl.start(train_cmd(dl, run, 2, *BASE, *CONFIGS["dapo"], *overrides))
    try:
        _wait_for_checkpoint(proc, run)
    finally:
        dl.kill_launch(proc)  # both ranks and the agent
        proc.communicate()
    saved = int((run / "train" / "latest").read_text().strip().rsplit("_", 1)[1])
    assert saved < 3, "the run finished before it was killed"
    copy = run.parent / "copy"
    shutil.copytree(run, copy, symlinks=True)
    return run, copy


def resume(dl, run: Path, nproc: int) -> Any:
    cmd = [*dl.torchrun, "--standalone", f"--nproc_per_node={nproc}", "--no-python", *MEMRL, "train"]
    return ok(dl.finish(dl.start([*cmd, "--resume", str(run)]), run))


@pytest.mark.timeout(1200)
def test_sigkill_both_ranks_then_resume_equals_the_uninterrupted_run(train_runs, killed_run, dl):
    run, _ = killed_run
    resume(dl, run, 2)
    reference = train_runs("dapo", 2)
    assert max_diff(final_params(reference), final_params(run)) == 0.0
    assert_same_metrics(metrics(reference), metrics(run))


@pytest.mark.timeout(1200)
def test_resume_two_ranks_on_one(train_runs, killed_run, dl):
    """2 -> 1: DCP reshards model and optimiser; the warning says the RNG streams differ. The rollouts are
    seeded per group, so the result still matches the 2-rank run."""
    _, copy = killed_run
    out = resume(dl, copy, 1)
    assert "random streams differ" in out.output
    assert max_diff(final_params(train_runs("dapo", 2)), final_params(copy)) < 1e-5


@pytest.mark.timeout(900)
def test_memrl_eval_reads_the_exported_weights(train_runs, dl, tmp_path):
    """`memrl eval <run>` on the 2-rank run (its train/latest's exported policy/) gives the numbers of the
    1-rank run's."""
    import subprocess

    accs = []
    for nproc in (1, 2):
        out = tmp_path / f"eval{nproc}"
        cmd = [*MEMRL, "eval", f"model.name_or_path={train_runs('dapo', nproc)}", "eval.limit=8", "eval.n=2"]
        proc = subprocess.run(
            [*cmd, f"hydra.run.dir={out}"], cwd=dl.repo, env=dl.env(), capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results = json.loads(next((out / "eval").glob("results_*.json")).read_text())
        accs.append(results["overall"])
    assert accs[0] == accs[1]


@pytest.mark.timeout(600)
def test_one_rank_failing_ends_both_naming_it(dl, tmp_path, monkeypatch):
    """A plugin that raises on rank 1 only: rank 0 waits in a collective until torchrun ends it; the launch
    fails, naming rank 1 and the error, well within the deadline (a hang fails the test)."""
    (tmp_path / "fail_on_rank1.py").write_text(
        "import os\nif os.environ.get('RANK') == '1':\n    raise RuntimeError('planted failure on rank 1')\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    run = tmp_path / "run"
    out = dl.finish(dl.start(train_cmd(dl, run, 2, *BASE, "plugins=[fail_on_rank1]", "dist.timeout_s=60")), run)
    assert out.returncode != 0
    assert "planted failure on rank 1" in out.output
    assert "rank       : 1" in out.output or "rank: 1" in out.output, out.output[-3000:]
