"""`memrl train` end to end: files written, and a run killed with SIGKILL resumes to identical parameters.

The kills are deterministic: the child process sends itself SIGKILL at a chosen point of a chosen
checkpoint write (the `KILL_AT` hook below, test code only), so what is on disk at the kill does not
depend on timing or machine load.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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


# `memrl train` that SIGKILLs itself at KILL_AT="<step>:<point>" of the checkpoint write of that step:
#   optimizer: the policy is in the checkpoint's temporary folder, optimizer.pt is not (a torn checkpoint)
#   latest: global_step_<step> is complete, train/latest still names the step before
_KILLING_TRAIN = """
import os, signal, torch
import memrl.rl.checkpoint as ck
step, point = os.environ["KILL_AT"].split(":")
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "optimizer":
    real_save = torch.save
    def save(obj, f, *a, **k):
        if f".{ck.PREFIX}{step}.tmp-" in str(f) and str(f).endswith("optimizer.pt"):
            die()
        return real_save(obj, f, *a, **k)
    torch.save = save
elif point == "latest":
    real_write = ck.atomic_write_text
    def write(path, text, *a, **k):
        if str(path).endswith(ck.LATEST) and text.strip() == f"{ck.PREFIX}{step}":
            die()
        return real_write(path, text, *a, **k)
    ck.atomic_write_text = write
else:
    raise SystemExit(f"unknown kill point {point}")
from memrl.cli import main
main()
"""


def _killed(kill_at: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", _KILLING_TRAIN, "train", *args]
    return subprocess.run(cmd, env={**_env(), "KILL_AT": kill_at}, capture_output=True, text=True, timeout=600)


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

    # the same run killed twice, each time in the middle of a checkpoint write, and resumed each time
    killed = tmp_path / "killed"
    train = killed / "train"
    # 1. while writing step 2's checkpoint (after step 2's metrics and validation were logged)
    first = _killed("2:optimizer", *ARGS, f"hydra.run.dir={killed}")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert (train / "latest").read_text().strip() == "global_step_1"
    torn = list(train.glob(".global_step_2.tmp-*"))
    assert len(torn) == 1 and (torn[0] / "policy").is_dir() and not (torn[0] / "optimizer.pt").exists()
    assert not (train / "global_step_2").exists()
    assert [r["step"] for r in _metrics(killed)] == [1, 2]
    # 2. resumed from step 1, killed after step 3's checkpoint folder is complete but before latest names it
    second = _killed("3:latest", "--resume", str(killed))
    assert second.returncode == -signal.SIGKILL, second.stderr[-2000:]
    assert (train / "latest").read_text().strip() == "global_step_2"
    assert (train / "global_step_3" / "trainer_state.json").is_file()
    assert [r["step"] for r in _metrics(killed)] == [1, 2, 3]
    # 3. resumed from step 2 (step 3's complete but unnamed checkpoint is redone, its metrics row dropped)
    subprocess.run(_cmd("--resume", str(killed)), env=_env(), check=True, capture_output=True, timeout=600)
    assert (killed / "train" / "latest").read_text().strip() == "global_step_4"
    a, b = _weights(full, 4), _weights(killed, 4)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the resumed run's metrics continue the killed one's without gaps or duplicates, with the same rewards
    resumed = _metrics(killed)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["reward/acc_generated"] for r in resumed] == [r["reward/acc_generated"] for r in rows]
    assert [r.get("val/greedy_acc") for r in resumed] == [r.get("val/greedy_acc") for r in rows]
