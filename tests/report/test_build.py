"""`memrl report`: tables with mean +- std and % of oracle, commands, missing jobs, and figures from their data."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from memrl.cli import app
from memrl.report.build import build_report, short_labels


def _job(root, num, overrides, reward, ratio, final=None, metrics=()):
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"reward": {"name": reward, "label_ratio": ratio}}))
    (job / "train").mkdir()
    (job / "train" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if final is not None:
        summary = {"final": final, "initial": {"greedy_acc": 0.25}, "labels": {"total_labels_consumed": 800 * ratio}}
        (job / "train" / "summary.json").write_text(json.dumps(summary))


def _final(greedy, p1, p4):
    return {"greedy_acc": greedy, "n": 4, "mean@4": p1, "distinct@4": 2.0, "pass@k": {"1": p1, "4": p4}}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    quality = [{"step": s, "metrics_only/reward_f1": 0.5, "meds/distinct_answers": 3.0} for s in (1, 2)]
    _job(root, 0, ["reward=oracle", "seed=0", "x=1"], "oracle", 1.0, _final(0.70, 0.60, 0.80))
    _job(root, 1, ["reward=oracle", "seed=1", "x=1"], "oracle", 1.0, _final(0.80, 0.70, 0.90))
    _job(
        root,
        2,
        ["reward=memreward", "reward.label_ratio=0.2", "seed=0", "x=1"],
        "memreward",
        0.2,
        _final(0.6, 0.5, 0.7),
        quality,
    )
    _job(
        root,
        3,
        ["reward=memreward", "reward.label_ratio=0.5", "seed=0", "x=1"],
        "memreward",
        0.5,
        _final(0.7, 0.6, 0.8),
        quality,
    )
    _job(root, 4, ["reward=memreward", "reward.label_ratio=0.5", "seed=1", "x=1"], "memreward", 0.5)  # failed
    return root


def test_report_tables_commands_and_figures(sweep, tmp_path):
    out = tmp_path / "out"
    text = build_report([sweep], out).read_text()
    assert "| % of oracle | labels consumed | per seed | pass@1 | pass@4 | distinct@4 |" in text
    assert (
        "| reward=oracle x=1 | 75.0 +- 7.1 | 2 | 100.0 | [800.0] | 70.0, 80.0 | 65.0 +- 7.1 | 85.0 +- 7.1 | 2.0 +- 0.0 |"
        in text
    )
    assert "| reward.label_ratio=0.2 reward=memreward x=1 | 60.0 +- 0.0 | 1 | 80.0 | [160.0] |" in text
    assert "`memrl train -m reward=oracle x=1 seed=0,1`" in text
    assert "`memrl train -m reward=memreward reward.label_ratio=0.5 x=1 seed=0,1`" in text
    assert f"(not averaged): {sweep / '4'}" in text
    for name in ("pass_at_k.png", "label_ratio.png", "reward_quality.png", "diversity.png"):
        assert (out / name).stat().st_size > 1000 and f"]({name})" in text
    table = json.loads((out / "report.json").read_text())["table"]
    assert [t["n"] for t in table] == [2, 1, 1]


def test_short_labels_drop_shared_overrides():
    assert short_labels(["a=1 x=1", "a=2 x=1"]) == {"a=1 x=1": "a=1", "a=2 x=1": "a=2"}
    assert short_labels(["only x=1"]) == {"only x=1": "only x=1"}


def test_cli_report_and_its_errors(sweep, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["report", str(sweep), "--out", str(tmp_path / "o"), "--title", "toy"])
    assert ok.exit_code == 0 and "# toy" in ok.output and (tmp_path / "o" / "report.md").is_file()
    missing = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such sweep folder" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no job folders" in empty.output
