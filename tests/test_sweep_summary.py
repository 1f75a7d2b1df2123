"""The sweep summary callback: grouping by setting, mean and spread over seeds, missing jobs listed."""

from __future__ import annotations

import json

import pytest
import yaml

from memrl.sweep_summary import collect_jobs, summarise, to_markdown


def _job(root, num, overrides, greedy=None):
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if greedy is not None:
        (job / "train").mkdir()
        summary = {
            "final": {"greedy_acc": greedy},
            "initial": {"greedy_acc": 0.25},
            "labels": {"total_labels_consumed": 160},
        }
        (job / "train" / "summary.json").write_text(json.dumps(summary))


def test_summary_groups_seeds_and_lists_missing(tmp_path):
    _job(tmp_path, 0, ["reward=oracle", "seed=0"], 0.70)
    _job(tmp_path, 1, ["reward=oracle", "seed=1"], 0.74)
    _job(tmp_path, 2, ["reward=partial", "seed=0"], 0.40)
    _job(tmp_path, 3, ["reward=partial", "seed=1"])  # unfinished
    (tmp_path / "multirun.yaml").write_text("{}")
    table = summarise(collect_jobs(tmp_path))
    oracle, partial = table
    assert oracle["setting"] == "reward=oracle" and oracle["n"] == 2
    assert oracle["mean"] == pytest.approx(0.72)
    assert oracle["std"] == pytest.approx(0.028284, abs=1e-6)
    assert oracle["initial_mean"] == pytest.approx(0.25)
    assert partial["n"] == 1 and partial["std"] == 0.0 and partial["missing"] == [str(tmp_path / "3")]
    md = to_markdown(table)
    assert "| % of oracle |" in md  # a reward=oracle row is the reference
    assert "| reward=oracle | 72.0 +- 2.8 | 2 | 100.0 |" in md
    assert "| reward=partial | 40.0 +- 0.0 | 1 | 55.6 |" in md
    assert "unfinished or failed jobs" in md and str(tmp_path / "3") in md


def test_summary_pools_several_sweep_folders(tmp_path, capsys):
    from memrl.sweep_summary import main

    _job(tmp_path / "a", 0, ["reward=oracle", "seed=0"], 0.70)
    _job(tmp_path / "b", 0, ["reward=oracle", "seed=1"], 0.80)
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "| reward=oracle | 75.0 +- 7.1 | 2 | 100.0 |" in capsys.readouterr().out
    assert main([]) == 2


def test_a_setting_is_the_same_whatever_the_order_of_its_overrides(tmp_path):
    _job(tmp_path / "a", 0, ["+arm=grpo", "seed=0", "experiment=toy_meds"], 0.70)
    _job(tmp_path / "b", 0, ["experiment=toy_meds", "+arm=grpo", "seed=1"], 0.80)
    table = summarise([row for d in ("a", "b") for row in collect_jobs(tmp_path / d)])
    assert [(t["setting"], t["n"]) for t in table] == [("+arm=grpo experiment=toy_meds", 2)]
