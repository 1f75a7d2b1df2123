"""`memrl train` end to end: files written, and a run killed with SIGKILL resumes to identical parameters."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

# small but complete: two mini-batches per step (so the scoring pass runs), validation every 2 steps
ARGS = [
    "trainer.total_steps=4",
    "trainer.save_freq=1",
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
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from memrl.cli import main; main()", "train", *args]


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "train" / f"global_step_{step}" / "policy" / "model.safetensors"))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_run_directory_and_resumes_after_sigkill(tiny_model_dir, tmp_path):
    full = tmp_path / "full"
    subprocess.run(_cmd(*ARGS, f"hydra.run.dir={full}"), env=_env(), check=True, capture_output=True, timeout=600)

    # what one run leaves behind
    rows = _metrics(full)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("actor/pg_loss", "actor/grad_norm", "reward/acc_generated", "perf/throughput", "timing_s/gen"):
        assert all(key in r for r in rows), key
    assert "val/greedy_acc" in rows[1] and "val/pass@2" in rows[3] and "val/greedy_acc" not in rows[0]
    assert (full / "train" / "latest").read_text().strip() == "global_step_4"
    assert (full / "train" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((full / "train" / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["labels"]["validation_labels_used"] == 6
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["stages"]["train"]["status"] == "done"
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(initial[k], v) for k, v in _weights(full, 4).items())
    # run again, a finished run does nothing (a re-run sweep skips its finished jobs)
    again = subprocess.run(_cmd("--resume", str(full)), env=_env(), check=True, capture_output=True, text=True)
    assert "finished (4 steps" in again.stdout and _metrics(full) == rows

    # the same run, killed at a random moment after its first checkpoint, then resumed
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(*ARGS, f"hydra.run.dir={killed}"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    # train/latest names a complete checkpoint (global_step_N appears just before it)
    while not (killed / "train" / "latest").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = (killed / "train" / "latest").read_text().strip()
    assert done_before != "global_step_4", "the run finished before it could be killed"
    subprocess.run(_cmd("--resume", str(killed)), env=_env(), check=True, capture_output=True, timeout=600)
    assert (killed / "train" / "latest").read_text().strip() == "global_step_4"
    a, b = _weights(full, 4), _weights(killed, 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the resumed run's metrics continue the killed one's without gaps or duplicates, with the same rewards
    resumed = _metrics(killed)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["reward/acc_generated"] for r in resumed] == [r["reward/acc_generated"] for r in rows]
    assert [r.get("val/greedy_acc") for r in resumed] == [r.get("val/greedy_acc") for r in rows]
