"""`memrl report`: tables with mean +- std and % of oracle, commands, missing jobs, and figures from their data."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from memrl.cli import app
from memrl.errors import UserError
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
    table = json.loads((out / "report.json").read_text())["sections"][0]["table"]
    assert [t["n"] for t in table] == [2, 1, 1]


def test_sections_have_their_own_tables_and_figures_linked_from_the_markdown(sweep, tmp_path):
    """--table sections: one titled table each; figures prefixed per section, linked relative to --markdown."""
    other = tmp_path / "other"
    _job(other, 0, ["reward=oracle", "seed=0", "x=1"], "oracle", 1.0, _final(0.9, 0.8, 0.95))
    md = tmp_path / "docs" / "results.md"
    out = tmp_path / "docs" / "results"
    path = build_report([], out, "results", sections=[("Main", [sweep]), ("Other", [other])], markdown=md)
    text = path.read_text()
    assert path == md and text.index("## Main") < text.index("## Other")
    assert "| reward=oracle x=1 | 90.0 +- 0.0 | 1 | 100.0 |" in text.split("## Other")[1]
    assert "](results/1_pass_at_k.png)" in text and "](results/2_pass_at_k.png)" in text
    assert (out / "1_label_ratio.png").is_file() and not (out / "2_label_ratio.png").exists()
    sections = json.loads((out / "report.json").read_text())["sections"]
    assert [(s["title"], [t["n"] for t in s["table"]]) for s in sections] == [("Main", [2, 1, 1]), ("Other", [1])]
    assert f'--table "Main={sweep}" --table "Other={other}"' in text


def test_variants_get_their_own_label_ratio_line():
    from memrl.report.build import curve_name

    assert curve_name({"name": "memreward", "memreward": {"reward_model": "gnn"}}) == "memreward"
    assert curve_name({"name": "memreward", "memreward": {"reward_model": "mlp"}}) == "memreward (mlp)"
    grow = {"name": "memreward", "memreward": {"reward_model": "gnn", "grow_memory": True}}
    assert curve_name(grow) == "memreward (growing memory)"
    assert curve_name({"name": "partial"}) == "partial"


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
    none = runner.invoke(app, ["report"])
    assert none.exit_code == 2 and "give at least one sweep folder" in none.output
    bad = runner.invoke(app, ["report", "--table", "no-title"])
    assert bad.exit_code == 2 and "expected TITLE=DIR" in bad.output
    titled = runner.invoke(app, ["report", "--table", f"T={sweep}", "-o", str(tmp_path / "t")])
    assert titled.exit_code == 0 and "## T" in titled.output


def test_initial_policy_line(sweep, tmp_path):
    run = tmp_path / "initial"
    (run / "eval").mkdir(parents=True)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["eval.n=4", "hydra.run.dir=x"]))
    overall = {"n_problems": 200, "greedy_acc": 0.275, "n": 4, "pass@k": {"1": 0.25, "4": 0.6}, "distinct@4": 2.5}
    (run / "eval" / "results_1.json").write_text(json.dumps({"overall": overall}))
    text = build_report([sweep], tmp_path / "out", initial=run).read_text()
    assert "on 200 test problems: greedy 27.5, pass@1 25.0, pass@4 60.0, distinct@4 2.5 (`memrl eval eval.n=4`" in text
    with pytest.raises(UserError, match="no eval/results"):
        build_report([sweep], tmp_path / "out", initial=tmp_path)
