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


def test_tiny_is_the_model_of_the_synthetic_task(monkeypatch, tmp_path):
    """ "tiny" routes to the embedded default for the arithmetic task (any levels, families or seed) and to the
    toy's own model for rule_tags / meds_strategies, or for another depth (model.tiny_layers)."""
    from memrl.config.schema import SyntheticConfig
    from memrl.policy import load

    calls = []
    monkeypatch.setattr(load, "ensure_tiny_model", lambda cache: calls.append(("default", cache)) or tmp_path / "d")
    monkeypatch.setattr(
        load,
        "ensure_toy_model",
        lambda syn, layers, cache: calls.append((syn.task, layers, cache)) or tmp_path / f"{syn.task}-{layers}",
    )
    arith = SyntheticConfig(levels=[1], seed=7)
    assert load.resolve_model_path("tiny", tmp_path) == str(tmp_path / "d")
    assert load.resolve_model_path("tiny", tmp_path, arith) == str(tmp_path / "d")
    assert load.resolve_model_path("tiny", tmp_path, arith, 8) == str(tmp_path / "arithmetic-8")
    toy = SyntheticConfig(task="rule_tags")
    assert load.resolve_model_path("tiny", tmp_path, toy) == str(tmp_path / "rule_tags-None")
    assert calls == [
        ("default", tmp_path),
        ("default", tmp_path),
        ("arithmetic", 8, tmp_path),
        ("rule_tags", None, tmp_path),
    ]
