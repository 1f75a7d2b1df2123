"""Every config in conf/ composes against the typed schema; bad keys and values fail with their names."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from memrl.apps import CONF_DIR

GROUPS = ["model", "data", "rollout", "eval", "grading", "logger", "paths", "experiment"]


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
