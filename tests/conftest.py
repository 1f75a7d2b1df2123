"""Shared fixtures. Tests never touch the network: the hub is offline and wandb is offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _subprocess_env(**extra: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.fixture(scope="session")
def subprocess_env():
    """`subprocess_env(**extra)`: the environment of a process a test starts (a memrl command, a torchrun launch,
    a script): this process's at the call, with this checkout first on PYTHONPATH, one thread per process
    (OMP_NUM_THREADS=1: processes running side by side share the cores), the hub offline, and `extra` on top
    (a value None removes the variable)."""
    return _subprocess_env


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny default model, built once (about two minutes) and cached under MEMRL_CACHE."""
    from memrl.policy.tiny import ensure_tiny_model

    return ensure_tiny_model(progress=False)


@pytest.fixture
def compose_eval(tmp_path):
    """Compose the `eval` app config with the Compose API (tests only), writing under tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from memrl.apps import CONF_DIR, setup

    setup()

    def _compose(*overrides: str, config_name: str = "eval"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                config_name=config_name,
                overrides=[f"paths.output_root={tmp_path}", *overrides],
                return_hydra_config=True,
            )

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def policy(tiny_model_dir):
    """A fresh tiny policy and its tokenizer (float32, CPU), for tests that train it."""
    from memrl.config.schema import ModelConfig
    from memrl.policy.load import load_policy

    model, tok, _ = load_policy(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", dtype="float32"))
    return model, tok
