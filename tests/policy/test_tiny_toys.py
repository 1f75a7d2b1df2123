"""Tiny models of the toy tasks: one cache folder per (task, task settings, layers), the arithmetic default
untouched, builds once and atomically, and the preconditions computed right from known completions.

No test builds a model (a build takes minutes); the build itself runs in scripts/toy_preconditions.py.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from memrl.config.schema import SyntheticConfig
from memrl.data import toys as T
from memrl.errors import UserError
from memrl.policy import tiny
from memrl.policy import tiny_toys as TT


def test_arithmetic_default_is_the_embedded_default(tmp_path):
    assert TT.toy_model_dir(SyntheticConfig(), None, tmp_path) == tiny.tiny_model_dir(tmp_path)
    assert TT.toy_model_dir(SyntheticConfig(), 4, tmp_path) == tiny.tiny_model_dir(tmp_path)
    # anything else that changes the warm start gets its own folder
    # (a short warm start, sft_steps=60, keeps the data the keys hash small)
    eight = TT.toy_model_dir(SyntheticConfig(), 8, tmp_path, 60)
    other_seed = TT.toy_model_dir(SyntheticConfig(seed=5), None, tmp_path, 60)
    assert len({tiny.tiny_model_dir(tmp_path), eight, other_seed}) == 3
    assert eight.name.startswith(f"{tiny.TINY_NAME}-arithmetic-8l-")
    assert eight != TT.toy_model_dir(SyntheticConfig(), 8, tmp_path, 61)


def test_cache_folder_covers_task_settings_and_layers(tmp_path):
    def folder_of(cfg, layers=None):
        return TT.toy_model_dir(cfg, layers, tmp_path, 60)  # a short warm start: little data to hash

    base = SyntheticConfig(task="rule_tags")
    folder = folder_of(base)
    assert folder.name.startswith(f"{tiny.TINY_NAME}-rule_tags-4l-") and folder == folder_of(base, 4)
    changed = [
        dataclasses.replace(base, n_tags=100),
        dataclasses.replace(base, seed=1),
        dataclasses.replace(base, rule_right_share=0.35),
        dataclasses.replace(base, wrong_plurality_tags=0.5),
    ]
    folders = {folder_of(c) for c in changed} | {folder, folder_of(base, 8)}
    assert len(folders) == 6
    # sizes of the splits do not change the warm start, so they share the model
    assert folder_of(dataclasses.replace(base, train_size=900)) == folder
    meds = SyntheticConfig(task="meds_strategies")
    assert folder_of(meds, 8).name.startswith(f"{tiny.TINY_NAME}-meds_strategies-8l-")
    assert folder_of(meds, 8) != folder_of(dataclasses.replace(meds, levels=[2, 3]), 8)
    assert TT.task_settings(meds) == {
        "task": "meds_strategies",
        "seed": 1234,
        "families": ["add", "sub", "mul", "mix"],
        "levels": [1, 2, 3],
    }


def test_build_settings(tmp_path):
    s = TT.toy_build_settings("meds_strategies", 8)
    assert s.num_hidden_layers == 8 and s.max_new_tokens == 96
    assert dataclasses.replace(s, num_hidden_layers=4, max_new_tokens=64) == tiny.TinySettings()
    assert TT.toy_build_settings("rule_tags", None, 320).sft_steps == 320
    # rule_tags warms up at a lower learning rate (the default's 3e-3 plateaus on it)
    assert TT.toy_build_settings("rule_tags").lr == 1e-3 and TT.toy_build_settings("meds_strategies").lr == 3e-3
    rule = SyntheticConfig(task="rule_tags")
    assert TT.toy_model_dir(rule, None, tmp_path, 320) != TT.toy_model_dir(rule, None, tmp_path, 60)
    assert TT.toy_model_dir(SyntheticConfig(), None, None, 960) == tiny.tiny_model_dir()
    with pytest.raises(UserError, match="more than 50 steps"):
        TT.toy_build_settings("rule_tags", None, 50)
    with pytest.raises(UserError, match="at least one layer"):
        TT.toy_build_settings("rule_tags", 0)
    with pytest.raises(UserError, match="valid tasks"):
        TT.toy_model_dir(SyntheticConfig(task="nope"), None)


def test_ensure_builds_once_and_atomically(monkeypatch, tmp_path):
    calls = []

    def fake(out_dir, synthetic_cfg, layers=None, progress=True, sft_steps=None):
        calls.append((Path(out_dir).name, synthetic_cfg.task, layers))
        (Path(out_dir) / "config.json").write_text("{}")
        (Path(out_dir) / tiny.BUILD_INFO).write_text(json.dumps({"fake": True}))
        return {}

    monkeypatch.setattr(TT, "build_toy_model", fake)
    cfg = SyntheticConfig(task="meds_strategies")
    target = TT.toy_model_dir(cfg, 8, tmp_path, 60)
    (tmp_path / f".{target.name}.tmp-dead").mkdir()  # leftovers of a killed build are swept
    assert TT.ensure_toy_model(cfg, 8, tmp_path, progress=False, sft_steps=60) == target
    assert TT.ensure_toy_model(cfg, 8, tmp_path, progress=False, sft_steps=60) == target
    assert (tmp_path / f".{target.name}.lock").is_file()  # a lock of its own
    assert len(calls) == 1 and calls[0][0].startswith(f".{target.name}.tmp-") and calls[0][1:] == ("meds_strategies", 8)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [target.name]

    def broken(out_dir, synthetic_cfg, layers=None, progress=True, sft_steps=None):
        (Path(out_dir) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(TT, "build_toy_model", broken)
    with pytest.raises(KeyboardInterrupt):
        TT.ensure_toy_model(SyntheticConfig(task="rule_tags"), None, tmp_path, progress=False, sft_steps=60)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [target.name]


def _fake_generation(monkeypatch, groups):
    monkeypatch.setattr(tiny, "generate_completions", lambda model, tok, prompts, **kw: groups[: len(prompts)])


def test_meds_preconditions_from_known_completions(monkeypatch):
    cfg = SyntheticConfig(task="meds_strategies", families=["sub"], train_size=4)
    problems = T.load_split("train", cfg)
    rng = random.Random(0)
    # group 0: 2 careful, 5 skip (dominant on sub), 1 unparseable; groups 1-3: 6 skip, 2 guess (all wrong)
    groups = [[T.strategy_solution(problems[0], s, rng) for s in ["careful"] * 2 + ["skip"] * 5] + ["nothing"]]
    for p in problems[1:]:
        groups.append([T.strategy_solution(p, s, rng) for s in ["skip"] * 6 + ["guess"] * 2])
    _fake_generation(monkeypatch, groups)
    settings = TT.toy_build_settings("meds_strategies", 8)
    m = TT.measure_toy(None, None, cfg, problems, settings)
    assert m["sample_accuracy"] == pytest.approx(2 / 32, abs=1e-4)
    assert m["all_wrong_group_fraction"] == 0.75 and m["mixed_group_fraction"] == 0.25
    assert m["dominant_wrong_share"] == pytest.approx(23 / 32, abs=1e-4)
    assert m["dominant_share_of_wrong"] == pytest.approx(23 / 30, abs=1e-4)
    assert m["strategy_share"] == {"careful": 0.0625, "guess": 0.1875, "skip": 0.7188, "slip": 0.0}
    assert m["unlabelled_share"] == pytest.approx(1 / 32, abs=1e-4) and m["named_vs_answer_agreement"] == 1.0
    assert m["per_family"]["sub"]["dominant"] == "skip"
    assert m["named_strategy_share"]["skip"] == pytest.approx(23 / 32, abs=1e-4) and m["careful_named_accuracy"] == 1.0
    assert m["dominant_named_share"] == pytest.approx(23 / 32, abs=1e-4)


def test_rule_tags_preconditions_from_known_completions(monkeypatch):
    cfg = SyntheticConfig(task="rule_tags", n_tags=2, train_size=4)
    problems = T.load_split("train", cfg)  # tags T0, T1, T0, T1
    groups = []
    for p in problems:
        right, *wrong = T.tag_rules(cfg, p.metadata["tag"])
        # T0: right 4 of 8, each wrong rule once, one unparseable; T1: right 2 of 8, first wrong rule 6
        names = [right] * 4 + wrong + [None] if p.metadata["tag"] == "T0" else [right] * 2 + [wrong[0]] * 6
        groups.append([T.rule_solution(p, r) if r else "Rule max:" for r in names])
    _fake_generation(monkeypatch, groups)
    m = TT.measure_toy(None, None, cfg, problems, TT.toy_build_settings("rule_tags"))
    assert m["tags"] == 2 and m["samples_per_tag"] == 16
    assert m["right_rule_share"]["mean"] == pytest.approx((0.5 + 0.25) / 2, abs=1e-4)
    assert m["wrong_rule_share"]["mean"] == pytest.approx((3 / 8 + 6 / 8) / 6, abs=1e-4)
    assert m["max_wrong_rule_share"]["mean"] == pytest.approx((1 / 8 + 6 / 8) / 2, abs=1e-4)
    assert m["right_is_plurality"] == 0.5 and m["right_is_plurality_on_control_tags"] is None
    assert m["majority_answer_correct"] == 0.5 and m["named_vs_answer_agreement"] == 1.0
    # consensus margin per tag: T0 0.5 - 1/8, T1 0.25 - 6/8
    assert m["consensus_margin"]["mean"] == pytest.approx((0.375 - 0.5) / 2, abs=1e-4)
    # by the rule a rollout names: T0 hides max, so its unparseable "Rule max:" counts for the right rule there
    assert T.tag_rules(cfg, "T0")[0] == "max"
    assert m["named_right_rule_share"] == pytest.approx((5 / 8 + 2 / 8) / 2, abs=1e-4)
    assert m["named_consensus_margin"] == pytest.approx((5 / 8 - 1 / 8 + 2 / 8 - 6 / 8) / 2, abs=1e-4)


def test_rule_tags_tokenizer_has_one_token_per_tag():
    cfg = SyntheticConfig(task="rule_tags", n_tags=150)
    corpus = [p + c for p, c in T.sft_examples(cfg, random.Random(0), 200)]
    settings = TT.toy_build_settings("rule_tags")
    tok = TT.toy_tokenizer(cfg, corpus, settings)
    plain = TT.toy_tokenizer(dataclasses.replace(cfg, task="meds_strategies"), corpus, settings)
    assert len(tok) == len(plain) + 150
    for tag in ("T1", "T17", "T149"):
        ids = tok(f"Apply rule {tag} to 3 8 5 1.")["input_ids"]
        assert tok.convert_ids_to_tokens(ids).count(tag) == 1 and tok.decode(ids) == f"Apply rule {tag} to 3 8 5 1."
        # without the added tags a tag is the letter and one token per digit
        assert len(plain(tag)["input_ids"]) == len(tag)
    words = dataclasses.replace(cfg, tag_style="words")
    tok = TT.toy_tokenizer(words, [p + c for p, c in T.sft_examples(words, random.Random(0), 200)], settings)
    for tag in ("falcon", "pomegranate", "kingfisher", "cuba"):
        text = f"Apply rule {tag} to 3 8 5 1.\nRule {tag} min: \\boxed{{1}}"
        ids = tok(text)["input_ids"]
        assert tok.convert_ids_to_tokens(ids).count(tag) == 2 and tok.decode(ids) == text


def test_preconditions_script_uses_the_data_presets():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "toy_preconditions.py"
    spec = importlib.util.spec_from_file_location("toy_preconditions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rule = module.preset("rule_tags")
    assert (rule.task, rule.n_tags, rule.train_size, rule.wrong_plurality_tags) == ("rule_tags", 150, 450, 0.0)
    # 3 training queries per tag: with 20% labels about half of the tags have none
    assert rule.train_size == 3 * rule.n_tags
    meds = module.preset("meds_strategies")
    assert (meds.task, list(meds.levels), list(meds.families)) == (
        "meds_strategies",
        [1, 2],
        ["add", "sub", "mul", "mix"],
    )
