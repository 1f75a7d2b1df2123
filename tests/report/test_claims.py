"""The claims of docs/results.md: paired differences, verdicts, the controls' sentences and the README quote."""

import json
import math

import pytest

from memrl.report.claims import (
    NOT,
    PARTLY,
    REPRODUCED,
    SUMMARY_BEGIN,
    SUMMARY_END,
    Paired,
    claims_section,
    meds_claim,
    memreward_claim,
    quote_summary,
    summary_block,
)


def _job(tmp_path, sweep, overrides, seed, final, steps=()):
    d = tmp_path / sweep / f"{len(list((tmp_path / sweep).glob('*'))) if (tmp_path / sweep).exists() else 0}"
    (d / "train").mkdir(parents=True)
    (d / "train" / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    return {
        "dir": str(d),
        "setting": " ".join(overrides),
        "seed": str(seed),
        "overrides": [*overrides, f"seed={seed}"],
        "summary": {"final": final},
    }


def test_paired_difference_is_taken_seed_by_seed():
    p = Paired("pass@1", ("0", "1", "2"), (0.60, 0.70, 0.65), (0.50, 0.58, 0.56))
    assert p.diffs == pytest.approx([0.10, 0.12, 0.09])
    assert p.mean == pytest.approx(0.10333, abs=1e-4)
    assert p.se == pytest.approx(0.01528 / math.sqrt(3), abs=1e-4)
    assert p.clear
    assert p.text() == "+10.3 +- 0.9 pts (3 seeds)"
    # one seed the other way: not clear, though the mean is positive
    q = Paired("pass@1", ("0", "1", "2"), (0.60, 0.70, 0.50), (0.50, 0.58, 0.56))
    assert q.mean > 0 and not q.clear
    assert not Paired("pass@1", ("0",), (0.9,), (0.1,)).clear  # one seed is never clear


def _memreward_jobs(tmp_path, memreward, noise01, control_gap):
    jobs = []
    for s in range(3):
        jobs.append(_job(tmp_path, "rule_tags", ["reward=oracle"], s, {"pass@k": {"1": 0.85 + 0.01 * s}}))
        jobs.append(_job(tmp_path, "rule_tags", ["reward=partial"], s, {"pass@k": {"1": 0.70 + 0.01 * s}}))
        steps = [{"metrics_only/reward_fpr": 0.2, "metrics_only/reward_recall": 0.7}, {"metrics_only/reward_fpr": 0.4}]
        jobs.append(_job(tmp_path, "rule_tags", ["reward=memreward"], s, {"pass@k": {"1": memreward[s]}}, steps))
        jobs.append(
            _job(
                tmp_path,
                "rule_tags_noise",
                ["reward.memreward.oracle_noise.fpr=0.1"],
                s,
                {"pass@k": {"1": noise01 + 0.01 * s}},
            )
        )
        jobs.append(_job(tmp_path, "rule_tags_control", ["reward=partial"], s, {"pass@k": {"1": 0.6}}))
        jobs.append(_job(tmp_path, "rule_tags_control", ["reward=memreward"], s, {"pass@k": {"1": 0.6 + control_gap}}))
    return jobs


def test_memreward_verdicts_and_controls(tmp_path):
    # closes (0.82 - 0.70) / (0.85 - 0.70) = 80% of the gap on every seed: reproduced
    good = memreward_claim(_memreward_jobs(tmp_path / "a", [0.82, 0.83, 0.84], 0.80, 0.0))
    assert good.verdict == REPRODUCED
    assert "80% of the gap to the oracle closed" in "\n".join(good.lines)
    # the GNN's error rates: fpr the mean of the steps' means (0.3), fnr 1 - recall
    assert "false-positive rate 0.30, false-negative rate 0.30" in "\n".join(good.lines)
    assert "the gain falls where consensus misleads" in "\n".join(good.lines)
    # frozen GNN: fpr 0.3 over the first ten steps and over the last ten (two logged steps): no drift reported
    assert "its false-positive rate is 0.30 over the first ten steps and 0.30 over the last ten." in "\n".join(
        good.lines
    )
    # below R1-p: not reproduced, and the oracle-noise control says the setup could show it
    bad = memreward_claim(_memreward_jobs(tmp_path / "b", [0.30, 0.31, 0.29], 0.80, 0.0))
    assert bad.verdict == NOT
    text = "\n".join(bad.lines)
    assert "a reward predictor of that quality beats R1-p, so the setup can show the claim" in text
    assert "MemReward is below R1-p on both, so the control cannot say" in text
    # a clear gain that closes under half of the gap: partly
    some = memreward_claim(_memreward_jobs(tmp_path / "c", [0.73, 0.74, 0.75], 0.80, 0.0))
    assert some.verdict == PARTLY


def test_meds_claim_and_its_oracle_cluster_control(tmp_path):
    jobs = []
    for s in range(3):
        jobs.append(_job(tmp_path, "meds_strategies", ["+arm=dapo"], s, {"pass@k": {"1": 0.40, "4": 0.80, "16": 0.98}}))
        jobs.append(
            _job(
                tmp_path,
                "meds_strategies",
                ["+arm=dapo_meds"],
                s,
                {"pass@k": {"1": 0.40 + 0.001 * (s - 1), "4": 0.80 - 0.01 * s, "16": 0.98}},
                [{"meds/adv_shift": 0.02}],
            )
        )
        jobs.append(
            _job(
                tmp_path,
                "meds_strategies_options",
                ["+arm=dapo_meds_oracle_cluster"],
                s,
                {"pass@k": {"1": 0.40, "16": 0.95}},
            )
        )
    r = meds_claim(jobs)
    assert r.verdict == NOT
    text = "\n".join(r.lines)
    assert "`meds/adv_shift` of DAPO + MEDS (mean over steps and seeds): 0.020" in text
    assert (
        "no clustering can here: what holds MEDS back is not the clustering (its shaping moves a shaped group's advantages by 0.020"
        in text
    )
    # pass@16 at its ceiling: the line says so and gives pass@4 (DAPO + MEDS 1 point lower on average)
    assert "pass@16 is at its ceiling on this toy (DAPO 98.0)" in text and "pass@4: -1.0 +- 0.6 pts" in text
    section = "\n".join(claims_section(jobs))
    assert "### MEDS on meds_strategies: not reproduced" in section
    assert "### MemReward" not in section  # no rule_tags sweep, no MemReward claim


def test_readme_quotes_the_summary_block_verbatim():
    results = f"# results\n\n{SUMMARY_BEGIN}\nOn rule_tags, MemReward's claim is **partly** ...\n{SUMMARY_END}\n"
    readme = f"# memrl\n\nintro\n\n{SUMMARY_BEGIN}\nold text\n{SUMMARY_END}\n\n## Install\n"
    quoted = quote_summary(readme, results)
    assert summary_block(quoted) == summary_block(results)
    assert quoted.startswith("# memrl\n\nintro\n\n") and quoted.endswith("\n\n## Install\n")
    with pytest.raises(ValueError):
        quote_summary("# no markers\n", results)


def test_the_readme_quotes_docs_results_md():
    """The README's paragraph on what the toys show is docs/results.md's, as `make results` copied it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    results = (root / "docs" / "results.md").read_text()
    assert summary_block((root / "README.md").read_text()) == summary_block(results)
    assert "## The claims" in results and "### Summary" in results


def test_a_frozen_gnn_exploited_late_in_training_is_named(tmp_path):
    jobs = [
        j for j in _memreward_jobs(tmp_path, [0.0, 0.0, 0.0], 0.80, 0.0) if "reward=memreward" not in j["overrides"]
    ]
    steps = [
        {"metrics_only/reward_fpr": 0.1 if i < 10 else 0.9, "response_length/clip_ratio": float(i >= 10)}
        for i in range(20)
    ]
    jobs += [_job(tmp_path, "rule_tags", ["reward=memreward"], s, {"pass@k": {"1": 0.0}}, steps) for s in range(3)]
    r = memreward_claim(jobs)
    assert r.verdict == NOT
    assert (
        "its false-positive rate is 0.10 over the first ten steps and 0.90 over the last ten, when 100% of the rollouts "
        "run to the length limit: the policy found completions the GNN rewards that are wrong"
    ) in "\n".join(r.lines)
