"""DCP checkpoints of a 2-rank run (memrl.dist.checkpoint): exact resume after SIGKILL, async save,
resharding 2 -> 1, and the Hugging Face export of the full weights."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.timeout(900)


def test_sigkill_both_ranks_then_resume_is_exact(dl, tmp_path):
    # every step also draws per-rank random token weights: the resumed run needs each rank's own RNG back
    full = dl.ok(dl.launch(tmp_path / "full", "--steps", "4", "--rng-weights"))
    killed = dl.launch(tmp_path / "run", "--steps", "4", "--rng-weights", "--save-at", "2", "--kill-after-save")
    assert killed.returncode != 0 and "SIGKILL" in killed.output
    train = tmp_path / "run" / "train"
    assert (train / "latest").read_text().strip() == "global_step_2"
    ckpt = train / "global_step_2"
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (ckpt / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    # the reward blob comes back whole on rank 0 (the worker asserts it on resume)
    assert torch.load(ckpt / "rewards.pt", weights_only=False) == {"memory": [0, 1]}

    resumed = dl.ok(dl.launch(tmp_path / "run", "--steps", "4", "--rng-weights", "--resume"))
    assert resumed.result["history"] == full.result["history"]
    for k, v in full.params.items():
        assert torch.equal(v, resumed.params[k]), k


def test_async_save_then_resume_on_one_process(runs, dl, tmp_path):
    """Saved asynchronously at step 2 while steps 3-4 train on; resumed from it on 1 process (2 -> 1)."""
    run = dl.ok(dl.launch(tmp_path, "--steps", "4", "--save-at", "2", "--async-save"))
    two = runs("two")
    # async saving does not disturb training
    assert dl.max_diff(two.params, run.params) == 0.0
    assert (tmp_path / "train" / "latest").read_text().strip() == "global_step_2"

    resumed = dl.ok(dl.launch(tmp_path, "--steps", "4", "--resume", nproc=1))
    assert "written by 2 ranks and is resumed on 1" in resumed.output
    assert "random streams differ" in resumed.output
    # the checkpoint holds step 2's state (not the later one): steps 3-4 replay to the 2-rank result
    assert resumed.result["history"][:2] == two.result["history"][:2]
    assert dl.max_diff(two.params, resumed.params) < 1e-5


def test_hf_export_equals_the_gathered_state_dict(runs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    two = runs("two")
    hf = two.out / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    state = model.state_dict()
    gathered = two.params
    assert sorted(state) == sorted(gathered)
    for k, v in gathered.items():
        assert torch.equal(state[k], v), k
    tok = AutoTokenizer.from_pretrained(hf)
    ids = tok("1+2=", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_memrl_eval_reads_the_export(runs, tmp_path):
    import os
    import subprocess
    import sys

    hf = runs("two").out / "hf"
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    args = ["eval", f"model.name_or_path={hf}", f"paths.output_root={tmp_path}", "eval.limit=4", "eval.n=2"]
    out = subprocess.run(
        [sys.executable, "-m", "memrl.cli", *args, "grading.num_workers=0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (results,) = list(tmp_path.glob("eval/*/eval/results_*.json"))
    bench = json.loads(results.read_text())["benchmarks"]["synthetic"]
    assert bench["n_problems"] == 4
    assert 0.0 <= bench["greedy_acc"] <= 1.0
