"""The GPU check's preconditions (scripts/gpu_check.sh, scripts/gpu_wheels.txt) and its CPU mode.

The GPU machine has no vllm and no wandb: `memrl train` must run with both unimportable (they are imported
only for rollout=vllm and logger=wandb). Every module gpu_wheels.txt names must be what its package provides,
or gpu_check.sh would install it again on every run, or not at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# runs memrl's CLI with the named top-level modules unimportable
BLOCKED_RUN = """
import sys
blocked = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked by the test")
sys.meta_path.insert(0, Block())
from memrl.cli import main
main(sys.argv[2:])
"""


def wheel_lines() -> list[tuple[str, str, str]]:
    """(package, version, module) of each line of scripts/gpu_wheels.txt."""
    out = []
    for line in (REPO / "scripts" / "gpu_wheels.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req, _, module = line.partition("#")
        name, _, version = req.strip().partition("==")
        out.append((name, version, module.strip()))
    return out


def test_memrl_train_runs_without_vllm_and_wandb(tiny_model_dir, tmp_path, subprocess_env):
    run = tmp_path / "run"
    args = [
        "train",
        "algo=grpo",
        "trainer.total_steps=1",
        "trainer.train_batch_size=2",
        "trainer.gen_batch_size=2",
        "trainer.ppo_mini_batch_size=2",
        "rollout.n=2",
        "rollout.max_new_tokens=8",
        "trainer.save_freq=1",
        "trainer.initial_eval=false",
        "trainer.final_eval=false",
        "trainer.progress=false",
        f"hydra.run.dir={run}",
    ]
    cmd = [sys.executable, "-c", BLOCKED_RUN, "vllm,wandb", *args]
    proc = subprocess.run(
        cmd, cwd=REPO, env=subprocess_env(WANDB_MODE=None), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(x) for x in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "perf/time_per_step" in r] == [1]
    # and the blocker works: asking for the vLLM engine fails on the blocked import, with memrl's hint
    proc = subprocess.run(
        [*cmd[:4], *args, "rollout=vllm", f"hydra.run.dir={tmp_path / 'vllm'}"],
        cwd=REPO,
        env=subprocess_env(WANDB_MODE=None),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr + proc.stdout


def test_gpu_wheels_name_each_packages_module():
    from importlib.metadata import distribution, packages_distributions

    lines = wheel_lines()
    assert {n for n, _, _ in lines} >= {"hydra-core", "omegaconf", "antlr4-python3-runtime", "math-verify"}
    provided = packages_distributions()
    for name, version, module in lines:
        assert version, f"{name}: pin a version (the wheels are downloaded for another machine)"
        dist = distribution(name)
        assert dist.metadata["Name"].lower().replace("_", "-") == name.lower().replace("_", "-")
        assert dist.metadata["Name"] in provided.get(module, []), (name, module, provided.get(module))


@pytest.mark.slow
def test_gpu_check_cpu_mode_end_to_end(tiny_model_dir, tmp_path, subprocess_env):
    """scripts/gpu_check.sh --cpu --small: the same runs as on a GPU, on a small model (several minutes)."""
    env = subprocess_env(WANDB_MODE=None, PYTHON=sys.executable)
    proc = subprocess.run(
        [str(REPO / "scripts" / "gpu_check.sh"), "--cpu", "--small", "--out", str(tmp_path / "gc")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    runs = {r["run"]: r for r in rows}
    assert set(runs) == {"single", "fsdp2", "kill+resume (fsdp2)"}
    assert runs["single"]["steps"] == runs["fsdp2"]["steps"] == 4
    assert all(runs[k]["tokens_per_s"] > 0 and runs[k]["update_s"] > 0 for k in ("single", "fsdp2"))
    resumed = runs["kill+resume (fsdp2)"]
    assert resumed["kill"] == "killed" and resumed["steps_logged"] == [1, 2, 3, 4]
    # on one CPU process the resumed run repeats the uninterrupted one exactly
    assert all(v == 0.0 for v in resumed["max_abs_diff_vs_uninterrupted_after_step_2"].values())
