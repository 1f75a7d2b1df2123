"""`make reproduce`'s sweeps (conf/experiment/reproduce/): each composes with every value it sweeps, at the
scale and with the recipe its header states, into a fixed (resumable) sweep folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from memrl.apps import CONF_DIR

SWEEPS = {
    "memreward": {"reward": "oracle,partial,memreward,memreward_grow"},
    "label_ratio": {"reward.label_ratio": "0.1,0.3,0.5,0.7"},
    "memreward_ablations": {"reward.memreward.reward_model": "homogeneous,no_think,mlp"},
    "meds": {"+arm": "grpo,dapo,grpo_entropy,dapo_meds"},
    "meds_ablations": {"+arm": "dapo_meds_single,dapo_meds_layer_diff,dapo_meds_all_layers"},
}


def test_the_makefile_runs_every_sweep():
    files = sorted(p.stem for p in (Path(CONF_DIR) / "experiment" / "reproduce").glob("*.yaml"))
    assert files == sorted(SWEEPS)
    makefile = (Path(CONF_DIR).parent / "Makefile").read_text()
    listed = next(line for line in makefile.splitlines() if line.startswith("REPRO_SWEEPS :="))
    assert sorted(listed.split(":=")[1].split()) == sorted(SWEEPS)


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
