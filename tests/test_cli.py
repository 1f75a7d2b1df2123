"""The `memrl` CLI end to end: eval writes its files, sweeps make job directories, user errors are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = ["eval.limit=6", "eval.n=4", "rollout.batch_size=8", "grading.num_workers=0"]


def memrl(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", "memrl.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def test_help_lists_every_command(tmp_path):
    out = memrl("--help", cwd=tmp_path)
    assert out.returncode == 0
    for cmd in ("train", "eval", "rollout", "graph", "gnn", "report", "info"):
        assert cmd in out.stdout


@pytest.mark.parametrize("cmd", ["rollout", "graph", "gnn"])
def test_warmup_commands_need_memreward(tmp_path, cmd):
    out = memrl(cmd, "reward=oracle", cwd=tmp_path)
    assert out.returncode == 2
    assert "needs reward=memreward" in out.stderr
    assert "Traceback" not in out.stderr


def test_warmup_run_must_be_a_run_directory(tmp_path):
    out = memrl("gnn", "--run", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert out.returncode == 2
    assert "not a memrl run directory" in out.stderr


def test_info_json(tmp_path):
    out = memrl("info", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["packages"]["torch"]
    assert "gsm8k" in data["paths"]["bundled_benchmarks"]
    assert data["device"]["cpu_count"] >= 1


def test_eval_writes_results_samples_plot_and_manifest(tmp_path, tiny_model_dir):
    out = memrl("eval", f"paths.output_root={tmp_path}/out", *SMOKE, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = only(list((tmp_path / "out" / "eval").iterdir()))
    results = json.loads(only(list(run.glob("eval/results_*.json"))).read_text())
    bench = results["benchmarks"]["synthetic"]
    assert bench["n_problems"] == 6
    assert 0.0 <= bench["greedy_acc"] <= 1.0
    # pass@k is non-decreasing in k and pass@1 equals mean@n
    curve = [bench["pass@k"][k] for k in ("1", "2", "4")]
    assert curve == sorted(curve)
    assert bench["pass@k"]["1"] == pytest.approx(bench["mean@4"])
    samples = [json.loads(line) for line in only(list(run.glob("eval/samples_synthetic_*.jsonl"))).open()]
    assert len(samples) == 6 * (1 + 4)
    greedy = [s for s in samples if s["mode"] == "greedy"]
    assert bench["greedy_acc"] == pytest.approx(sum(s["correct"] for s in greedy) / 6)
    assert only(list(run.glob("eval/pass_at_k_*.png"))).stat().st_size > 1000
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["eval"]["status"] == "done"
    assert manifest["seed"] == 0
    assert manifest["packages"]["torch"]
    assert "commit" in manifest["git"] and "dirty" in manifest["git"]
    assert manifest["command"].startswith("memrl eval")
    assert (run / ".hydra" / "resolved.yaml").exists() and (run / "memrl.log").exists()
    assert "pass@4" in out.stdout  # the summary table


def test_multirun_creates_one_job_dir_per_value(tmp_path, tiny_model_dir):
    out = memrl(
        "eval",
        "-m",
        f"paths.output_root={tmp_path}/out",
        "eval.limit=3",
        "eval.n=2",
        "grading.num_workers=0",
        "data=synthetic,gsm8k",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = only(list((tmp_path / "out" / "eval" / "multiruns").iterdir()))
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    names = set()
    for job in jobs:
        results = json.loads(only(list((sweep / job).glob("eval/results_*.json"))).read_text())
        names |= set(results["benchmarks"])
    assert names == {"synthetic", "gsm8k"}
    assert (sweep / "multirun.yaml").exists()


def test_missing_model_is_one_clear_line(tmp_path):
    out = memrl("eval", f"paths.output_root={tmp_path}/out", "model.name_or_path=./no/such/model", cwd=tmp_path)
    assert out.returncode == 2
    assert "error: model path ./no/such/model does not exist" in out.stderr
    assert "Traceback" not in out.stderr


def test_hub_model_offline_says_how_to_get_it(tmp_path):
    out = memrl(
        "eval",
        f"paths.output_root={tmp_path}/out",
        "model=hf",
        "model.name_or_path=Qwen/Qwen2.5-0.5B-Instruct",
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert "not found" in out.stderr and "model.name_or_path=DIR" in out.stderr
    assert "Traceback" not in out.stderr


def test_malformed_jsonl_names_file_and_line(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": \n')
    out = memrl("eval", f"paths.output_root={tmp_path}/out", "data=local", f"data.eval_sets.0.path={bad}", cwd=tmp_path)
    assert out.returncode == 2
    assert f"{bad}:2" in out.stderr
    assert "Traceback" not in out.stderr
    run = only(list((tmp_path / "out" / "eval").iterdir()))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["eval"]["status"] == "failed"


def test_misspelt_key_exits_nonzero_without_traceback(tmp_path):
    out = memrl("eval", "eval.nn=3", cwd=tmp_path)
    assert out.returncode != 0
    assert "Key 'nn' not in 'EvalConfig'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["data=gsm8k"], "no training set"),
        (["algo.loss_agg_mode=mean"], "valid: token-mean"),
        (["--resume", "nowhere"], "not a memrl run directory"),
        (["trainer.resume=never"], "trainer.resume=never; valid: auto"),
    ],
)
def test_train_user_errors_are_one_line(tmp_path, args, message):
    out = memrl("train", *args, "trainer.final_eval=false", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args", [["train", "--resume", "somewhere", "-m"], ["gnn", "--run", "somewhere", "-m"]])
def test_one_run_options_refuse_multirun(tmp_path, args):
    out = memrl(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "cannot be combined with -m/--multirun" in out.stderr


@pytest.mark.parametrize("cmd", ["train", "gnn"])
def test_force_starts_over_with_resume_disable(tmp_path, cmd):
    """--force is trainer.resume=disable (docs/run-directory.md), and --help says what it does."""
    out = memrl(cmd, "--force", "--cfg", "job", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "resume: disable" in out.stdout
    assert "resume: disable" not in memrl(cmd, "--cfg", "job", cwd=tmp_path).stdout
    help_text = " ".join(memrl(cmd, "--help", cwd=tmp_path).stdout.split())
    assert "--force" in help_text and "trainer.resume=disable" in help_text
