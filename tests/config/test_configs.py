"""Every config in conf/ composes against the typed schema; bad keys and values fail with their names."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from memrl.apps import CONF_DIR

GROUPS = ["model", "data", "rollout", "eval", "grading", "logger", "paths"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(compose_eval, group, option):
    cfg = compose_eval(f"{group}={option}")
    # every value that does not need a user-supplied path must resolve
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container["task_name"] == "eval"
    assert cfg.paths.data_dir  # the resolver finds the bundled data
    for spec in cfg.data.eval_sets:
        assert spec.name


@pytest.mark.parametrize("option", options("experiment"))
def test_every_experiment_composes(compose_eval, option):
    # an experiment belongs to `memrl eval` or to `memrl train` (whose config has the trainer keys)
    errors = []
    for app in ("eval", "train"):
        try:
            cfg = compose_eval(f"experiment={option}", config_name=app)
        except ConfigCompositionException as e:
            errors.append(f"{app}: {e}")
            continue
        assert cfg.paths.data_dir and all(spec.name for spec in cfg.data.eval_sets)
        return
    pytest.fail(f"experiment={option} composes with neither app config: {errors}")


def test_toy_memreward_sweeps_three_modes_and_seeds(compose_eval):
    cfg = compose_eval("experiment=toy_memreward", config_name="train")
    params = cfg.hydra.sweeper.params
    assert params.reward == "oracle,partial,memreward" and params.seed == "0,1,2"
    assert cfg.trainer.total_epochs == 1.2 and cfg.data.synthetic.train_size == 800


def test_defaults(compose_eval):
    cfg = compose_eval()
    assert cfg.model.name_or_path == "tiny"
    assert [s.name for s in cfg.data.eval_sets] == ["synthetic"]
    assert cfg.eval.n == 8 and cfg.eval.greedy is True
    assert cfg.grading.timeout_s == 5.0


def test_misspelt_key_names_the_key(compose_eval):
    with pytest.raises(ConfigCompositionException) as e:
        compose_eval("model.nme=x")
    assert "Key 'nme' not in 'ModelConfig'" in str(e.value.__cause__)


def test_bad_choice_lists_the_valid_values(compose_eval):
    with pytest.raises(ConfigCompositionException) as e:
        compose_eval("data.eval_sets.0.domain=maths")
    msg = str(e.value.__cause__)
    assert isinstance(e.value.__cause__, ValidationError)
    assert "math, choice, code" in msg


def test_unknown_group_option_lists_choices(compose_eval):
    with pytest.raises(Exception) as e:
        compose_eval("data=gsm9k")
    assert "gsm8k" in str(e.value)  # the available options are listed


def test_yaml_with_unknown_key_fails(tmp_path, compose_eval):
    # a misspelt key inside a YAML file (not only on the command line) fails at compose time
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    (conf / "eval" / "typo.yaml").write_text("greedy: true\nnum_samples: 8\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as e:
            compose(config_name="eval", overrides=["eval=typo"])
    assert "Key 'num_samples' not in 'EvalConfig'" in str(e.value)


TRAIN_GROUPS = ["algo", "reward", "trainer", "model", "data", "meds"]


@pytest.mark.parametrize("group,option", [(g, o) for g in TRAIN_GROUPS for o in options(g)])
def test_every_train_option_composes(compose_eval, group, option):
    cfg = compose_eval(f"{group}={option}", config_name="train")
    assert cfg.task_name == "train"
    assert cfg.trainer.train_batch_size % cfg.trainer.ppo_mini_batch_size == 0


def test_train_defaults_are_the_dapo_cpu_preset(compose_eval):
    cfg = compose_eval(config_name="train")
    assert cfg.hydra.runtime.choices.algo == "dapo" and cfg.reward.name == "oracle"
    assert (cfg.algo.clip_ratio_low, cfg.algo.clip_ratio_high, cfg.algo.clip_ratio_c) == (0.2, 0.28, 10.0)
    assert cfg.algo.loss_agg_mode == "token-mean" and cfg.algo.filter_groups.enable
    assert cfg.algo.filter_groups.metric == "acc" and not cfg.algo.use_kl_loss
    assert cfg.data.train_set.split == "train" and cfg.data.val_set.split == "validation"
    grpo = compose_eval("algo=grpo", config_name="train")
    assert grpo.algo.use_kl_loss and grpo.algo.kl_loss_coef == 0.001 and grpo.algo.kl_loss_type == "low_var_kl"
    assert grpo.algo.loss_agg_mode == "seq-mean-token-mean" and not grpo.algo.filter_groups.enable


def test_misspelt_train_key_names_the_key(compose_eval):
    with pytest.raises(ConfigCompositionException) as e:
        compose_eval("algo.clip_ratio_hgh=0.3", config_name="train")
    assert "Key 'clip_ratio_hgh' not in 'AlgoConfig'" in str(e.value.__cause__)


def test_an_experiment_overrides_the_app_config(compose_eval):
    # the experiment comes after the app config's own keys, so its task_name (the output folder) wins
    assert compose_eval("experiment=toy_memreward", config_name="train").task_name == "toy_memreward"


@pytest.mark.parametrize("arm", options("arm"))
def test_every_meds_arm_composes(compose_eval, arm):
    cfg = compose_eval(f"+arm={arm}", config_name="train")
    want = {"dapo": ("dapo", "none"), "grpo": ("grpo", "none"), "grpo_entropy": ("grpo_entropy", "none")}
    algo, target = want.get(arm, ("dapo", "wrong"))
    assert (cfg.hydra.runtime.choices.algo, cfg.meds.enable, cfg.meds.penalty_target) == (algo, True, target)
    assert (cfg.algo.adv_estimator == "grpo_entropy") == (arm == "grpo_entropy")
    # the ablations change one thing each
    m = cfg.meds
    assert (m.cluster_method, m.layer_diff, m.last_n_layers) == {
        "dapo_meds_single": ("single", False, None),
        "dapo_meds_layer_diff": ("hdbscan", True, None),
        "dapo_meds_all_layers": ("hdbscan", False, 0),
    }.get(arm, ("hdbscan", False, None))


def test_toy_meds_sweeps_four_arms_and_three_seeds(compose_eval):
    cfg = compose_eval("experiment=toy_meds", config_name="train")
    params = cfg.hydra.sweeper.params
    assert params["+arm"] == "grpo,dapo,grpo_entropy,dapo_meds" and params.seed == "0,1,2"
    assert cfg.data.synthetic.train_size == 64 and cfg.eval.n == 16
    assert not cfg.meds.enable  # MEDS comes with the arm
    meds = compose_eval("meds=enabled", config_name="train").meds
    assert (meds.penalty_coef, meds.penalty_cap, meds.k, meds.min_cluster_size, meds.min_samples) == (0.1, 2.0, 3, 2, 1)
    assert list(meds.anchor_patterns) == ["\\boxed{"] and meds.last_n_layers is None
