"""`memrl train rollout=vllm` and `memrl eval rollout=vllm` end to end on the CPU build (`make test-vllm`).

Skipped where vLLM is not installed. Training: a few steps sample from the vLLM engine, which is synced
after every update; a run stopped after its step-2 checkpoint and resumed ends with the same parameters,
bit for bit, as the uninterrupted run (sampling seeds come from torch's checkpointed RNG, and the resumed
engine is synced from the checkpoint). Evaluation: the same greedy accuracy as the transformers engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

# the CPU engine: exact float32 weights, no compilation, a small KV cache
VLLM = [
    "rollout=vllm",
    "rollout.dtype=float32",
    "rollout.enforce_eager=true",
    "rollout.kv_cache_gb=0.25",
    "rollout.max_model_len=512",
]
TRAIN = [
    "trainer.total_steps=4",
    "trainer.save_freq=2",
    "trainer.train_batch_size=4",
    "trainer.gen_batch_size=4",
    "trainer.ppo_mini_batch_size=2",
    "trainer.test_freq=2",
    "trainer.val_limit=6",
    "trainer.val_n=2",
    "trainer.final_eval=false",
    "trainer.progress=false",
    "trainer.max_ckpt_to_keep=null",
    "rollout.n=4",
    "rollout.max_new_tokens=40",
    "trainer.lr=3e-4",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        TOKENIZERS_PARALLELISM="false",
        VLLM_LOGGING_LEVEL="WARNING",
    )
    return env


def _memrl(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from memrl.cli import main; main()", *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "train" / f"global_step_{step}" / "policy" / "model.safetensors"))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]


def test_train_with_vllm_rollouts_checkpoints_and_resumes(tiny_model_dir, tmp_path):
    full = tmp_path / "full"
    _memrl("train", *VLLM, *TRAIN, f"hydra.run.dir={full}")
    rows = _metrics(full)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["response_length/mean"] > 0 and "actor/pg_loss" in r for r in rows)
    assert "val/greedy_acc" in rows[1] and "val/greedy_acc" in rows[3]
    config = json.loads((full / "manifest.json").read_text())
    assert "vllm" in json.dumps(config)
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    final = _weights(full, 4)
    assert any(not torch.equal(initial[k], v) for k, v in final.items())

    # the run as if killed after its step-2 checkpoint: step 4 and the metrics after step 2 are gone
    killed = tmp_path / "killed"
    shutil.copytree(full, killed)
    shutil.rmtree(killed / "train" / "global_step_4")
    (killed / "train" / "latest").write_text("global_step_2")
    _memrl("train", "--resume", str(killed))
    assert (killed / "train" / "latest").read_text().strip() == "global_step_4"
    resumed = _weights(killed, 4)
    assert resumed.keys() == final.keys() and all(torch.equal(resumed[k], final[k]) for k in final)
    again = _metrics(killed)
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    assert [r["reward/acc_generated"] for r in again] == [r["reward/acc_generated"] for r in rows]
    assert [r.get("val/greedy_acc") for r in again] == [r.get("val/greedy_acc") for r in rows]


def test_eval_with_vllm_matches_transformers(tiny_model_dir, tmp_path):
    common = ["eval.limit=40", "eval.n=4", "eval.plot=false", "logger=none"]
    acc = {}
    for name, engine in (("hf", ["rollout=hf"]), ("vllm", VLLM)):
        out = tmp_path / name
        _memrl("eval", *engine, *common, f"hydra.run.dir={out}")
        (results,) = sorted((out / "eval").glob("results_*.json"))
        data = json.loads(results.read_text())
        assert data["config"]["rollout"]["engine"] == name
        acc[name] = data["benchmarks"]["synthetic"]
    assert acc["vllm"]["greedy_acc"] == acc["hf"]["greedy_acc"]
    assert 0 < acc["vllm"]["greedy_acc"] < 1 and 0 <= acc["vllm"]["mean@4"] <= 1
