"""Fixtures of the RL tests: the tiny policy (fresh per test where it is trained) and a few prompts."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # the suite shares 2 cores; the tiny model is faster on one thread than on two contended ones
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def policy(tiny_model_dir):
    from memrl.config.schema import ModelConfig
    from memrl.policy.load import load_policy

    model, tok, _ = load_policy(ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", dtype="float32"))
    return model, tok


@pytest.fixture(scope="session")
def synthetic_train():
    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import load_split

    return load_split("train", SyntheticConfig(train_size=64))
