"""Trackers: the none tracker, wandb offline into the run directory, flattened metric names."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from memrl.errors import UserError
from memrl.tracking import NoTracker, build_tracker, flatten_eval_metrics


def test_flatten_eval_metrics():
    results = {
        "benchmarks": {
            "gsm8k": {"n_problems": 4, "greedy_acc": 0.25, "pass@k": {1: 0.5, 2: 0.75}, "correct_counts": [1]}
        },
        "overall": {"n_problems": 4, "greedy_acc": 0.25},
    }
    assert flatten_eval_metrics(results) == {
        "eval/gsm8k/n_problems": 4.0,
        "eval/gsm8k/greedy_acc": 0.25,
        "eval/gsm8k/pass@1": 0.5,
        "eval/gsm8k/pass@2": 0.75,
        "eval/overall/n_problems": 4.0,
        "eval/overall/greedy_acc": 0.25,
    }


def test_none_and_unknown_backends(tmp_path):
    cfg = SimpleNamespace(backend="none", project="p", mode="offline", tags=[])
    assert isinstance(build_tracker(cfg, str(tmp_path), {}, "x"), NoTracker)
    with pytest.raises(UserError, match="valid: none, wandb"):
        build_tracker(SimpleNamespace(backend="tensorboard"), str(tmp_path), {}, "x")


def test_wandb_offline_writes_into_run_dir(tmp_path):
    cfg = SimpleNamespace(backend="wandb", project="memrl-test", mode="offline", tags=["t"])
    tracker = build_tracker(cfg, str(tmp_path), {"seed": 1}, "unit")
    tracker.log({"eval/x/greedy_acc": 0.5}, step=0)
    tracker.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())
