"""Where a model can come from: tiny, a model folder, a memrl run or checkpoint, a hub id."""

from __future__ import annotations

import pytest

from memrl.errors import UserError
from memrl.policy.load import pick_dtype, resolve_checkpoint, resolve_model_path


def make_policy(dir_):
    dir_.mkdir(parents=True)
    (dir_ / "config.json").write_text("{}")
    return dir_


def test_model_folder_resolves_to_itself(tmp_path):
    folder = make_policy(tmp_path / "m")
    assert resolve_model_path(str(folder)) == str(folder)


def test_checkpoint_and_run_directories(tmp_path):
    run = tmp_path / "run"
    policy = make_policy(run / "train" / "global_step_7" / "policy")
    make_policy(run / "train" / "global_step_3" / "policy")
    (run / "train" / "latest").write_text("global_step_7\n")
    assert resolve_checkpoint(run) == policy
    assert resolve_checkpoint(run / "train" / "global_step_7") == policy
    assert resolve_model_path(str(run)) == str(policy)


def test_dangling_latest_pointer(tmp_path):
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "train" / "latest").write_text("global_step_9")
    with pytest.raises(UserError, match="global_step_9"):
        resolve_model_path(str(run))


def test_folder_without_model(tmp_path):
    with pytest.raises(UserError, match="neither a Hugging Face model folder"):
        resolve_model_path(str(tmp_path))


def test_hub_id_passes_through_and_missing_path_errors():
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_path("./nowhere/model")


def test_dtype_choices():
    import torch

    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(UserError, match="valid: auto"):
        pick_dtype("fp8", "cpu")
