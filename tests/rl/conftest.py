"""Fixtures of the RL tests: one torch thread, a few prompts (the tiny `policy` is in tests/conftest.py)."""

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


@pytest.fixture(scope="session")
def synthetic_train():
    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import load_split

    return load_split("train", SyntheticConfig(train_size=64))
