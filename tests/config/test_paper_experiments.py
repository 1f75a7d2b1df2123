"""The paper-scale experiments (conf/experiment/paper/): each composes with every value it sweeps, with the
papers' hyperparameters (docs/methods.md#memreward-hyperparameters, docs/methods.md#meds-hyperparameters), and trains two steps with the tiny model and a tiny prepared
data set substituted, so that a typo in a paper config shows up here rather than on a GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from memrl.apps import CONF_DIR, setup

PAPER = Path(CONF_DIR) / "experiment" / "paper"
MODES = "oracle,partial,memreward"
ARMS = "grpo,dapo,grpo_entropy,dapo_meds"
# file -> (model, swept key, swept values)
EXPERIMENTS = {
    "memreward_qwen2.5-3b": ("Qwen/Qwen2.5-3B-Instruct", "reward", MODES),
    "memreward_qwen2.5-1.5b": ("Qwen/Qwen2.5-1.5B-Instruct", "reward", MODES),
    "memreward_ratio_qwen2.5-3b": ("Qwen/Qwen2.5-3B-Instruct", "reward.label_ratio", "0.3,0.4,0.5,0.6,0.7"),
    "memreward_ood_qwen2.5-3b": ("Qwen/Qwen2.5-3B-Instruct", "reward", MODES),
    "memreward_ood_qwen2.5-1.5b": ("Qwen/Qwen2.5-1.5B-Instruct", "reward", MODES),
    "meds_qwen3-1.7b": ("Qwen/Qwen3-1.7B", "arm", ARMS),
    "meds_qwen2.5-math-7b": ("Qwen/Qwen2.5-Math-7B", "arm", ARMS),
    "meds_qwen3-8b": ("Qwen/Qwen3-8B", "arm", ARMS),
}
JOBS = [(name, key, value) for name, (_, key, values) in EXPERIMENTS.items() for value in values.split(",")]


def test_every_paper_file_is_listed():
    assert sorted(p.stem for p in PAPER.glob("*.yaml")) == sorted(EXPERIMENTS)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_sweep_and_header(compose_eval, name):
    cfg = compose_eval(f"experiment=paper/{name}", config_name="train")
    model, key, values = EXPERIMENTS[name]
    assert dict(cfg.hydra.sweeper.params) == {key: values}
    assert cfg.model.name_or_path == model and cfg.task_name == f"paper_{name}"
    header = (PAPER / f"{name}.yaml").read_text()
    assert header.startswith("# @package _global_\n")
    assert f"memrl train -m experiment=paper/{name}" in header and "Tuned for:" in header
    prepared = "meds" if name.startswith("meds") else name.split("_qwen")[0].replace("_ratio", "")
    assert f"memrl data prepare {prepared} " in header


@pytest.mark.parametrize("name,key,value", [j for j in JOBS if j[0].startswith("memreward")])
def test_memreward_job_has_the_papers_recipe(compose_eval, name, key, value):
    cfg = compose_eval(f"experiment=paper/{name}", f"{key}={value}", config_name="train")
    a, t, r = cfg.algo, cfg.trainer, cfg.rollout
    assert cfg.hydra.runtime.choices.algo == "grpo"
    assert (a.use_kl_loss, a.kl_loss_coef, a.kl_loss_type) == (True, 0.001, "low_var_kl")
    assert (a.clip_ratio_low, a.clip_ratio_high, a.loss_agg_mode, a.filter_groups.enable) == (
        0.2,
        0.2,
        "token-mean",
        False,
    )
    assert (r.n, r.max_new_tokens, r.temperature, r.top_p) == (8, 1024, 1.0, 1.0)
    assert (t.train_batch_size, t.ppo_mini_batch_size, t.total_steps, t.total_epochs) == (128, 128, 410, None)
    assert (t.lr, t.weight_decay, t.lr_warmup_steps, t.grad_clip) == (1e-6, 0.01, 0, 1.0)
    assert (t.test_freq, t.save_freq, t.val_before_train, t.val_n) == (41, 41, False, 0)
    assert t.final_checkpoint == "best_val"  # find_best_checkpoint.py
    assert cfg.data.answer_format.value == "hash" and "####" in cfg.model.system_prompt
    assert (cfg.eval.greedy, cfg.eval.n, cfg.eval.max_new_tokens) == (True, 0, 1024)
    w = cfg.reward.memreward.warmup
    assert (w.n, w.temperature, w.top_p) == (8, 1.5, 0.95) and cfg.reward.memreward.gnn.hidden == 512
    ood = "_ood_" in name
    assert cfg.data.train_set.path.endswith(f"prepared/memreward{'_ood' if ood else ''}/train.jsonl")
    assert [s.name for s in cfg.data.eval_sets] == (
        ["numinamath", "siqa", "piqa"]
        if ood
        else ["gsm8k", "gsm_symbolic", "math", "mmlu", "commonsenseqa", "obqa", "arc_challenge", "gpqa_diamond"]
        + ["humaneval", "mbpp"]
    )
    if key == "reward":
        assert cfg.reward.name == value and cfg.reward.label_ratio == (1.0 if value == "oracle" else 0.2)
    else:
        assert cfg.reward.name == "memreward" and cfg.reward.label_ratio == float(value)


@pytest.mark.parametrize("name,key,value", [j for j in JOBS if j[0].startswith("meds")])
def test_meds_job_has_the_papers_recipe(compose_eval, name, key, value):
    cfg = compose_eval(f"experiment=paper/{name}", f"arm={value}", config_name="train")
    a, t, r = cfg.algo, cfg.trainer, cfg.rollout
    assert (t.train_batch_size, t.gen_batch_size, r.n, t.total_epochs, t.save_freq, t.test_freq) == (
        512,
        512,
        16,
        100,
        50,
        2,
    )
    assert (t.lr, t.lr_warmup_steps, t.weight_decay, t.grad_clip, r.temperature, r.top_p) == (
        1e-6,
        10,
        0.1,
        1.0,
        1.0,
        1.0,
    )
    assert r.max_new_tokens == (3072 if "math-7b" in name else 7168)
    assert cfg.meds.last_n_layers == (18 if name.endswith("8b") else 14) and cfg.meds.penalty_coef == 0.1
    assert cfg.data.val_set.name == "aime24" and t.val_before_train and t.val_n == 1
    assert cfg.data.train_set.path.endswith("prepared/meds/train.jsonl")
    assert (cfg.eval.n, cfg.eval.temperature, cfg.eval.ks[-1]) == (128, 1.0, 128)
    assert cfg.eval.max_new_tokens == (3072 if "math-7b" in name else 8192)
    dapo = value.startswith("dapo")
    assert cfg.hydra.runtime.choices.algo == {"grpo": "grpo", "grpo_entropy": "grpo_entropy"}.get(value, "dapo")
    assert a.filter_groups.enable == dapo and cfg.reward.overlong_buffer.enable == dapo
    if dapo:
        assert (cfg.reward.overlong_buffer.len, cfg.reward.overlong_buffer.penalty_factor) == (512, 1.0)
        assert (a.clip_ratio_low, a.clip_ratio_high, a.use_kl_loss, a.loss_agg_mode) == (0.2, 0.28, False, "token-mean")
    else:
        assert (a.clip_ratio_high, a.kl_loss_coef, a.loss_agg_mode) == (0.2, 0.001, "seq-mean-token-mean")
    assert t.ppo_mini_batch_size == (32 if value == "grpo" else 16)
    assert cfg.meds.enable and (cfg.meds.penalty_target == "wrong") == (value == "dapo_meds")


def test_meds_file_without_an_arm_is_the_method(compose_eval):
    cfg = compose_eval("experiment=paper/meds_qwen3-1.7b", config_name="train")
    assert cfg.hydra.runtime.choices.algo == "dapo" and cfg.meds.penalty_target == "wrong"


# --------------------------------------------------------------------------------------------------- two steps


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data folder with the bundled benchmarks (linked) and tiny prepared sets built from fake hub rows."""
    import importlib.util

    from memrl.data.loaders import default_data_dir
    from memrl.stages.prepare import prepare

    # the fake hub rows of tests/stages/test_prepare.py (tests are not a package: load the file)
    spec = importlib.util.spec_from_file_location("_fake_hub", Path(__file__).parents[1] / "stages" / "test_prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    root = tmp_path_factory.mktemp("data")
    for bundled in default_data_dir().iterdir():
        if bundled.is_dir():
            (root / bundled.name).symlink_to(bundled)
    for name in ("memreward", "memreward_ood", "meds"):
        prepare(name, root / "prepared", load=module.fake_hub(10))
    return root


# the tiny model and a CPU-sized run: 2 steps of 4 prompts x 2 rollouts, 2 problems per eval set
TINY = [
    "model=tiny",
    "trainer=cpu",
    "trainer.total_steps=2",
    "trainer.total_epochs=null",
    "trainer.train_batch_size=4",
    "trainer.gen_batch_size=4",
    "trainer.ppo_mini_batch_size=2",
    "trainer.micro_batch_size=8",
    "trainer.val_limit=2",
    "trainer.initial_eval=false",
    "trainer.progress=false",
    "rollout.n=2",
    "rollout.max_new_tokens=12",
    "eval.limit=2",
    "eval.n=2",
    "eval.ks=[1,2]",
    "eval.max_new_tokens=12",
    "algo.filter_groups.max_num_gen_batches=2",
    "grading.num_workers=0",
    "reward.overlong_buffer.len=4",
    "reward.memreward.warmup.n=2",
    "reward.memreward.val_limit=4",
    "reward.memreward.report_queries=0",
    "reward.memreward.baselines=false",
    "reward.memreward.gnn.restarts=1",
    "reward.memreward.gnn.hidden=8",
    "reward.memreward.gnn.heads=1",
    "reward.memreward.gnn.max_epochs=2",
    "reward.memreward.gnn.min_epochs=0",
    "reward.memreward.gnn.eval_every=1",
]

# each file once with its default choice, and every other arm or mode once (on one model: the rest is equal)
RUNS = [(name, None) for name in EXPERIMENTS] + [
    ("memreward_qwen2.5-3b", "reward=oracle"),
    ("memreward_qwen2.5-3b", "reward=partial"),
    ("meds_qwen3-1.7b", "arm=grpo"),
    ("meds_qwen3-1.7b", "arm=grpo_entropy"),
    ("meds_qwen3-1.7b", "arm=dapo"),
]


@pytest.mark.parametrize("name,choice", RUNS)
def test_two_steps(tiny_model_dir, data_dir, tmp_path, name, choice):
    import torch

    from memrl.run_dir import RunDir
    from memrl.stages.train import run

    setup()
    overrides = [f"experiment=paper/{name}", *([choice] if choice else []), *TINY]
    overrides += [f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}", f"paths.output_root={tmp_path}"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.model.name_or_path == "tiny"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run(cfg, RunDir(tmp_path))
    finally:
        torch.set_num_threads(threads)
    assert summary["steps"] == 2
    assert (tmp_path / "train" / "latest").read_text().strip() == "global_step_2"
    results = json.loads(next((tmp_path / "eval").glob("results_*.json")).read_text())
    assert set(results["benchmarks"]) == {s.name for s in cfg.data.eval_sets}
    if cfg.reward.name == "memreward":
        assert (tmp_path / "gnn" / "gnn.pt").is_file()


@pytest.fixture(scope="module")
def paper_gpus():
    """experiment -> (GPUs of 80 GB it needs, its model's parameter count), from scripts/memory_table.py --paper."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "scripts" / "memory_table.py"
    spec = importlib.util.spec_from_file_location("memory_table", path)
    mt = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mt  # its dataclasses look their module up there
    spec.loader.exec_module(mt)
    out = {}
    for name, model, kl in mt.paper_runs():
        counts = mt.count_parameters(mt.MODELS[model])
        out[name] = (mt.gpus_needed(counts, kl, 80.0, 20.0)[0], counts.total)
    return out


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_composes_with_fsdp2_and_header_gives_the_torchrun_command(compose_eval, paper_gpus, name):
    cfg = compose_eval(f"experiment=paper/{name}", "dist=fsdp2", config_name="train")
    assert cfg.dist.strategy.value == "fsdp2" and cfg.model.name_or_path == EXPERIMENTS[name][0]
    gpus, params = paper_gpus[name]
    # the memory model: 1.5B-3B fit 1-2 GPUs, the 7B/8B models need 4
    assert gpus == (4 if params > 7e9 else 2 if params > 2.5e9 else 1)
    header = (PAPER / f"{name}.yaml").read_text()
    cmd = f"torchrun --standalone --nproc_per_node={gpus} --no-python memrl train experiment=paper/{name} dist=fsdp2"
    assert cmd in header
    assert "no sharding" not in header
