"""`make reproduce`'s sweeps on the toys and `make reproduce-arithmetic`'s (conf/experiment/reproduce/): each composes
with every value it sweeps, at the scale and with the recipe its header states, into a fixed (resumable) sweep
folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from memrl.apps import CONF_DIR

# make reproduce: the toys built for each claim (docs/toys.md)
TOY_SWEEPS = {
    "rule_tags": {"reward": "oracle,partial,memreward"},
    "rule_tags_noise": {"reward.memreward.oracle_noise.fpr": "0.1,0.3"},
    "rule_tags_control": {"reward": "partial,memreward"},
    "meds_strategies": {"+arm": "grpo,dapo,dapo_meds"},
    "meds_strategies_options": {
        "+arm": "dapo_meds_oracle_cluster,dapo_meds_all_groups,dapo_meds_visits,dapo_meds_strong"
    },
}
# make reproduce-arithmetic: the first tables, on the arithmetic task
SWEEPS = {
    "memreward": {"reward": "oracle,partial,memreward,memreward_grow"},
    "label_ratio": {"reward.label_ratio": "0.1,0.3,0.5,0.7"},
    "memreward_ablations": {"reward.memreward.reward_model": "homogeneous,no_think,mlp"},
    "meds": {"+arm": "grpo,dapo,grpo_entropy,dapo_meds"},
    "meds_ablations": {"+arm": "dapo_meds_single,dapo_meds_layer_diff,dapo_meds_all_layers"},
}


def test_the_makefile_runs_every_sweep():
    files = sorted(p.stem for p in (Path(CONF_DIR) / "experiment" / "reproduce").glob("*.yaml"))
    assert files == sorted([*SWEEPS, *TOY_SWEEPS])
    makefile = (Path(CONF_DIR).parent / "Makefile").read_text()
    for var, sweeps in (("REPRO_SWEEPS", TOY_SWEEPS), ("ARITH_SWEEPS", SWEEPS)):
        listed = next(line for line in makefile.splitlines() if line.startswith(f"{var} :="))
        assert sorted(listed.split(":=")[1].split()) == sorted(sweeps)


@pytest.mark.parametrize("name", sorted(TOY_SWEEPS))
def test_toy_sweeps_task_scale_and_folder(compose_eval, tmp_path, name):
    cfg = compose_eval(f"experiment=reproduce/{name}", config_name="train")
    assert {k: v for k, v in cfg.hydra.sweeper.params.items()} == {**TOY_SWEEPS[name], "seed": "0,1,2"}
    assert cfg.hydra.sweep.dir == f"{tmp_path}/reproduce/{name}"
    assert cfg.model.name_or_path == "tiny"  # the task's own tiny model (memrl.policy.load.resolve_model_path)
    assert not cfg.trainer.initial_eval and cfg.trainer.test_freq == 0 and cfg.trainer.total_epochs is None
    if name.startswith("meds"):
        assert cfg.data.synthetic.task == "meds_strategies" and cfg.data.synthetic.train_size == 64
        assert cfg.trainer.total_steps == 32 and cfg.eval.n == 16 and cfg.rollout.max_new_tokens == 96
    else:  # the MemReward paper's recipe: GRPO with a KL loss, 8 rollouts, the same steps for every reward
        assert cfg.data.synthetic.task == "rule_tags" and cfg.hydra.runtime.choices.algo == "grpo"
        assert cfg.algo.use_kl_loss and cfg.rollout.n == 8 and cfg.trainer.total_steps == 64
        assert cfg.reward.memreward.warmup.temperature == 1.0
        assert cfg.data.synthetic.wrong_plurality_tags == (0.5 if name == "rule_tags_control" else 0.0)


@pytest.mark.parametrize(
    "name,key,value", [(n, k, v) for n, p in TOY_SWEEPS.items() for k, vs in p.items() for v in vs.split(",")]
)
def test_every_toy_job_composes(compose_eval, name, key, value):
    cfg = compose_eval(f"experiment=reproduce/{name}", f"{key}={value}", "seed=2", config_name="train")
    assert cfg.seed == 2
    if key == "reward":
        assert cfg.reward.name == value and cfg.reward.label_ratio == (1.0 if value == "oracle" else 0.2)
    elif key == "+arm":
        algo = "grpo" if value == "grpo" else "dapo"
        assert cfg.hydra.runtime.choices.algo == algo
        assert (cfg.meds.penalty_target == "wrong") == value.startswith("dapo_meds")
        assert (cfg.meds.cluster_source == "oracle") == (value == "dapo_meds_oracle_cluster")
        assert (cfg.meds.apply_to == "all_groups") == (value == "dapo_meds_all_groups")
        assert (cfg.meds.count == "visits") == (value == "dapo_meds_visits")
        assert cfg.meds.penalty_coef == (0.5 if value == "dapo_meds_strong" else 0.1)
    else:  # the oracle-noise control: the same false-positive and false-negative rate
        noise = cfg.reward.memreward.oracle_noise
        assert cfg.reward.memreward.reward_model == "oracle_noise" and noise.fpr == noise.fnr == float(value)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_params_folder_and_scale(compose_eval, tmp_path, name):
    cfg = compose_eval(f"experiment=reproduce/{name}", config_name="train")
    params = {k: v for k, v in cfg.hydra.sweeper.params.items()}
    assert params == {**SWEEPS[name], "seed": "0,1,2"}
    assert cfg.hydra.sweep.dir == f"{tmp_path}/reproduce/{name}"
    assert cfg.trainer.total_steps == 32 and cfg.trainer.total_epochs is None
    assert not cfg.trainer.initial_eval and cfg.trainer.test_freq == 0
    assert cfg.hydra.callbacks.sweep_summary._target_ == "memrl.sweep_summary.SweepSummary"
    if name.startswith("meds"):
        assert cfg.data.synthetic.train_size == 64 and cfg.eval.n == 16
    else:  # the MemReward paper's recipe: GRPO with a KL loss, 8 rollouts
        assert cfg.hydra.runtime.choices.algo == "grpo" and cfg.algo.use_kl_loss and cfg.rollout.n == 8
        assert cfg.data.synthetic.train_size == 800 and cfg.reward.memreward.gnn.hidden == 128
        assert cfg.reward.name == ("oracle" if name == "memreward" else "memreward")


@pytest.mark.parametrize(
    "name,key,value", [(n, k, v) for n, p in SWEEPS.items() for k, vs in p.items() for v in vs.split(",")]
)
def test_every_job_composes(compose_eval, name, key, value):
    cfg = compose_eval(f"experiment=reproduce/{name}", f"{key}={value}", "seed=2", config_name="train")
    assert cfg.seed == 2 and cfg.trainer.total_steps == 32
    if key == "reward":
        assert cfg.reward.name == value.removesuffix("_grow")
        assert cfg.reward.memreward.grow_memory == (value == "memreward_grow")
        assert cfg.hydra.runtime.choices.algo == "grpo" and cfg.reward.label_ratio == (
            1.0 if value == "oracle" else 0.2
        )
    elif key == "+arm":
        assert cfg.hydra.runtime.choices.algo == {"grpo": "grpo", "grpo_entropy": "grpo_entropy"}.get(value, "dapo")
        assert cfg.meds.enable and (cfg.meds.penalty_target == "wrong") == value.startswith("dapo_meds")
    else:
        assert str(OmegaConf.select(cfg, key)) == value
