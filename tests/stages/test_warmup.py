"""MemReward end to end on the tiny model: `memrl gnn` builds memory/, graph/ and gnn/ (skipped when they
exist), and `memrl train --resume` trains with the GNN's rewards and counts every label it consumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# 40 training queries, 10 labelled (+ 6 validation, 6 report queries), 4 rollouts each, a small GNN
ARGS = [
    "data.synthetic.train_size=40",
    "reward.label_ratio=0.25",
    "reward.memreward.val_limit=6",
    "reward.memreward.report_queries=6",
    "reward.memreward.warmup.n=4",
    "reward.memreward.gnn.hidden=16",
    "reward.memreward.gnn.heads=2",
    "reward.memreward.gnn.max_epochs=20",
    "rollout.max_new_tokens=40",
    "trainer.progress=false",
]
TRAIN_ARGS = [
    "trainer.total_steps=2",
    "trainer.train_batch_size=4",
    "trainer.gen_batch_size=4",
    "trainer.ppo_mini_batch_size=4",
    "trainer.test_freq=0",
    "trainer.final_eval=false",
    "algo.filter_groups.enable=false",
    "rollout.n=4",
    # the optional online growth, refreshing at every step where labelled groups have joined the memory
    "reward.memreward.grow_memory=true",
    "reward.memreward.refresh_every=1",
]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-c", "from memrl.cli import main; main()", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def warm_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run = tmp_path_factory.mktemp("memreward") / "run"
    out = _run("gnn", *ARGS, f"hydra.run.dir={run}")
    return run, out


def test_warmup_artifacts(warm_run):
    run, out = warm_run
    memory = json.loads((run / "memory" / "done.json").read_text())
    assert memory["summary"]["train"]["queries"] == 10 and memory["summary"]["train"]["rollouts"] == 40
    assert memory["summary"]["val"]["queries"] == 6 and memory["summary"]["report"]["queries"] == 6
    assert len(memory["labels"]["labelled_ids"]) == 10 and len(memory["labels"]["extra_validation_ids"]) == 6
    rows = (run / "memory" / "rollouts.jsonl").read_text().splitlines()
    assert len(rows) == 88 and {"think", "answer", "correct"} <= set(json.loads(rows[0]))

    graph = json.loads((run / "graph" / "done.json").read_text())
    # the training graph: 10 labelled queries + 6 validation queries attached, 4 rollouts each
    assert graph["nodes"] == {"query": 16, "think": 64, "answer": 64}
    assert graph["edges"]["query__generates_reasoning__think"] == 64
    assert graph["edges"]["think__leads_to__answer"] == 64
    # labelled: 7 of the 9 other labelled queries each; validation: 7 labelled neighbours each
    assert graph["edges"]["query__similar_to__query"] == 10 * 7 + 6 * 7

    report = json.loads((run / "gnn" / "report.json").read_text())
    assert set(report["models"]) == {"majority_vote", "gnn", "mlp", "homogeneous", "no_think"}
    for name, row in report["models"].items():
        assert row["report"]["n"] == 24, name
        assert 0.0 <= row["report"]["accuracy"] <= 1.0
    assert (run / "gnn" / "gnn.pt").is_file() and (run / "gnn" / "mlp.pt").is_file()
    assert "reward prediction on 6 held-out unlabelled queries" in out.stdout


def test_warmup_stages_are_skipped_when_done(warm_run):
    run, _ = warm_run
    before = (run / "gnn" / "report.json").stat().st_mtime_ns
    _run("gnn", "--run", str(run))
    assert (run / "gnn" / "report.json").stat().st_mtime_ns == before
    log = (run / "memrl.log").read_text()
    assert "experience memory exists" in log and "reward GNN exists" in log


def test_train_with_gnn_rewards_counts_labels(warm_run):
    run, _ = warm_run
    _run("train", "--resume", str(run), *TRAIN_ARGS)
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    # 4 prompts a step out of 40 queries, 30 unlabelled: the GNN judged some group in two steps
    assert sum(r.get("reward/gnn_groups", 0) for r in rows) > 0
    assert any("metrics_only/reward_f1" in r for r in rows)
    grown = [r["reward/gnn_memory_rollouts"] for r in rows if "reward/gnn_memory_rollouts" in r]
    assert grown and all(x >= 40 and x % 4 == 0 for x in grown)
    labels = json.loads((run / "train" / "summary.json").read_text())["labels"]
    assert labels["label_ratio"] == 0.25 and labels["labelled_train_queries"] == 10
    assert labels["train_labels_read"] == 10  # RL reads stay inside the labelled set the memory holds
    assert labels["gnn_validation_labels"] == 6
    assert labels["total_labels_consumed"] == 16
    ckpt = run / "train" / "global_step_2" / "rewards.pt"
    import torch

    state = torch.load(ckpt, weights_only=False)
    assert set(state["memreward"]["predictor"]) == {"spec", "model", "memory", "graph"}
    assert state["memreward"]["predictor"]["memory"]["query_emb"].shape[0] >= 10
    assert state["memreward"]["growth"]["grown_rollouts"] % 4 == 0


def online_reward(cfg, run_dir):
    """The online MemReward component, built through the reward registry as `memrl train` builds it, after the
    warm-up stages (each skipped when its artifacts exist)."""
    from memrl.rewards.registry import BuildContext, build_reward_pipeline
    from memrl.stages.warmup import run_warmup

    ctx = BuildContext(run_dir=run_dir, warmup=lambda: run_warmup(cfg, run_dir, None))
    ground_truth, component = build_reward_pipeline(cfg, ctx).components
    assert ground_truth.name == "ground_truth"
    return component


@pytest.mark.parametrize("kind", ["mlp", "homogeneous", "no_think"])
def test_an_ablation_scores_with_its_baseline_model(warm_run, compose_eval, kind):
    """reward.memreward.reward_model picks which model of gnn/ gives the online rewards (the paper's ablations)."""
    from memrl.run_dir import RunDir

    run, _ = warm_run
    cfg = compose_eval("reward=memreward", *ARGS, f"reward.memreward.reward_model={kind}", config_name="train")
    component = online_reward(cfg, RunDir(run))  # the warm-up exists: no rollout needed
    assert component.predictor.spec["kind"] == kind


def test_unknown_reward_model_names_the_choices(compose_eval):
    from memrl.errors import UserError
    from memrl.rewards.memreward import check_memreward_config

    cfg = compose_eval("reward=memreward", "reward.memreward.reward_model=forest", config_name="train")
    with pytest.raises(UserError, match="reward_model=forest; valid: gnn, homogeneous, no_think, mlp"):
        check_memreward_config(cfg)


def test_a_run_reuses_another_runs_warmup(warm_run, compose_eval, tmp_path):
    """reward.memreward.warmup_from (the paper's OOD runs): the memory, graph and GNN of another run are copied
    in, no rollout is made (policy=None would fail otherwise), and the predictor serves that run's GNN."""
    import torch

    from memrl.errors import UserError
    from memrl.memreward.artifacts import load_graph_inputs
    from memrl.run_dir import RunDir

    run, _ = warm_run
    other = tmp_path / "ood"
    other.mkdir()
    cfg = compose_eval("reward=memreward", *ARGS, f"reward.memreward.warmup_from={run}", config_name="train")
    component = online_reward(cfg, RunDir(other))
    for part, done in (("memory", "done.json"), ("graph", "done.json"), ("gnn", "report.json")):
        assert (other / part / done).read_bytes() == (run / part / done).read_bytes()
    saved = torch.load(run / "gnn" / "gnn.pt", weights_only=True)["state_dict"]
    live = component.predictor.model.state_dict()
    assert all(torch.equal(saved[k], live[k]) for k in saved)
    source_memory = load_graph_inputs(RunDir(run))[0]["train"]  # the source's 10 labelled queries
    assert component.predictor.memory.num_queries == 10
    assert torch.equal(component.predictor.memory.query_emb, source_memory.query_emb)

    with pytest.raises(UserError, match="no finished warm-up there"):
        bad = compose_eval("reward=memreward", *ARGS, f"reward.memreward.warmup_from={tmp_path}", config_name="train")
        online_reward(bad, RunDir(tmp_path / "x"))


def test_warmup_built_with_another_config_is_refused_naming_the_key(warm_run):
    """`memrl gnn --run` with another GNN setting: refused with the key and both values; nothing is rebuilt and
    the directory keeps the overrides its warm-up was built with."""
    run, _ = warm_run
    report = (run / "gnn" / "report.json").read_bytes()
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    cmd = [sys.executable, "-c", "from memrl.cli import main; main()", "gnn", "--run", str(run)]
    out = subprocess.run([*cmd, "reward.memreward.gnn.hidden=8"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert "gnn/ was built with another config" in out.stderr
    assert "reward.memreward.gnn.hidden: 16 -> 8" in out.stderr and "--force" in out.stderr
    assert (run / "gnn" / "report.json").read_bytes() == report
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides


def test_warmup_stage_with_force_rebuilds_only_what_changed(warm_run, compose_eval, tmp_path):
    """trainer.resume=disable (--force) with another GNN setting: gnn/ is rebuilt with it and records it; the
    memory and graph, built with the same keys, are kept."""
    import shutil

    from memrl.run_dir import RunDir, read_record
    from memrl.stages.gnn import run_gnn
    from memrl.stages.graph import run_graph
    from memrl.stages.rollout import run_rollout

    run, _ = warm_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    kept = {p: (copy / p / "done.json").read_bytes() for p in ("memory", "graph")}
    cfg = compose_eval(
        "reward=memreward", *ARGS, "reward.memreward.gnn.hidden=8", "trainer.resume=disable", config_name="train"
    )
    run_rollout(cfg, RunDir(copy), policy=None)  # the memory exists: no rollout
    run_graph(cfg, RunDir(copy))
    report = run_gnn(cfg, RunDir(copy))
    assert report["built_with"]["config"]["reward.memreward.gnn.hidden"] == 8
    assert read_record(copy, "gnn")["config"]["reward.memreward.gnn.hidden"] == 8
    assert torch_spec(copy / "gnn" / "gnn.pt")["hidden"] == 8
    assert {p: (copy / p / "done.json").read_bytes() for p in ("memory", "graph")} == kept


def torch_spec(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["spec"]


def test_warmup_from_into_a_directory_with_another_warmup_is_refused(warm_run, compose_eval, tmp_path):
    """reward.memreward.warmup_from checks the parts this directory already has against the source's records
    before copying: a memory built with other settings is not silently mixed with the source's GNN."""
    import json

    from memrl.run_dir import ConfigMismatch, RunDir
    from memrl.stages.rollout import run_rollout

    run, _ = warm_run
    dest = tmp_path / "dest"
    (dest / "memory").mkdir(parents=True)
    done = json.loads((run / "memory" / "done.json").read_text())
    done["built_with"]["config"]["reward.memreward.warmup.n"] = 2
    done["built_with"]["hash"] = "0" * 64
    (dest / "memory" / "done.json").write_text(json.dumps(done))
    cfg = compose_eval("reward=memreward", *ARGS, f"reward.memreward.warmup_from={run}", config_name="train")
    with pytest.raises(ConfigMismatch, match=r"warmup_from=.*warmup\.n: 2 -> 4"):
        run_rollout(cfg, RunDir(dest), policy=None)
    assert not (dest / "gnn").exists()
