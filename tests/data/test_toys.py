"""The toy tasks (memrl.data.toys): determinism, grading, behaviour labels, shares, and the arithmetic default."""

from __future__ import annotations

import collections
import dataclasses
import random

import pytest

from memrl.config.schema import SyntheticConfig
from memrl.data import synthetic as S
from memrl.data import toys as T
from memrl.data.templates import format_prompt
from memrl.errors import UserError
from memrl.grading.grader import GradeItem, Grader

RULES_CFG = SyntheticConfig(task="rule_tags", seed=11, n_tags=40, train_size=120, val_size=40, test_size=80)
MEDS_CFG = SyntheticConfig(task="meds_strategies", seed=11, train_size=200, val_size=40, test_size=80)


@pytest.fixture(scope="module")
def grader():
    with Grader(num_workers=0) as g:
        yield g


def _splits(cfg):
    return {s: T.load_split(s, cfg) for s in ("train", "validation", "test")}


@pytest.mark.parametrize("cfg", [RULES_CFG, MEDS_CFG], ids=["rule_tags", "meds_strategies"])
def test_deterministic_sized_disjoint_and_seeded(cfg):
    splits = _splits(cfg)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [120 if cfg is RULES_CFG else 200, 40, 80]
    again = _splits(cfg)
    for s in splits:
        assert [(p.id, p.question, p.answer, p.metadata) for p in again[s]] == [
            (p.id, p.question, p.answer, p.metadata) for p in splits[s]
        ]
        assert [p.id for p in splits[s]] == [f"{cfg.task}-{s}-{i:05d}" for i in range(len(splits[s]))]
        assert len({p.question for p in splits[s]}) == len(splits[s])
    qs = {s: {p.question for p in ps} for s, ps in splits.items()}
    assert not qs["train"] & qs["validation"] and not qs["train"] & qs["test"] and not qs["validation"] & qs["test"]
    other = T.load_split("test", dataclasses.replace(cfg, seed=12))
    assert [p.question for p in other] != [p.question for p in splits["test"]]
    assert [p.question for p in T.load_split("val", cfg)] == [p.question for p in splits["validation"]]


def test_arithmetic_is_the_default_and_unchanged():
    # the dispatcher hands the arithmetic task to memrl.data.synthetic untouched: same problems, same seed
    cfg = SyntheticConfig(seed=7, train_size=300, val_size=50, test_size=50)
    assert cfg.task == "arithmetic"
    for split in ("train", "validation", "test"):
        assert T.load_split(split, cfg) == S.load_split(split, cfg)
    assert T.sft_examples(cfg, random.Random(3), 40) == S.sft_examples(cfg, random.Random(3), n=40)
    # the first test problems of the default seed, as main generates them (pinned)
    first = [p.question for p in T.load_split("test", SyntheticConfig())[:4]]
    assert first == [p.question for p in S.load_split("test", SyntheticConfig())[:4]]
    assert T.behaviour_of(cfg, S.load_split("test", cfg)[0], "Guess: \\boxed{3}") == "guess"


def test_rule_tags_problems_and_tag_rules():
    splits = _splits(RULES_CFG)
    for p in splits["train"] + splits["test"]:
        tag, digits = T.parse_rule_question(p)
        assert p.metadata == {"task": "rule_tags", "tag": tag, "digits": digits}
        assert p.question == f"Apply rule {tag} to {' '.join(map(str, digits))}." and len(digits) == 4
        rules = T.tag_rules(RULES_CFG, tag)
        assert len(rules) == 1 + T.RULE_DISTRACTORS and len(set(rules)) == len(rules)
        # the tag's four rules give four different answers, the hidden rule's is the gold one
        assert len({T.apply_rule(r, digits) for r in rules}) == len(rules)
        assert p.answer == str(T.apply_rule(T.tag_rule(RULES_CFG, tag), digits))
    # problem i has tag i mod n_tags: every tag equally often
    counts = collections.Counter(p.metadata["tag"] for p in splits["train"])
    assert set(counts.values()) == {3} and len(counts) == 40
    # a tag's rule is fixed by (seed, tag), different tags hide different rules
    assert T.tag_rules(RULES_CFG, "T3") == T.tag_rules(dataclasses.replace(RULES_CFG, n_tags=7), "T3")
    assert len({T.tag_rule(RULES_CFG, f"T{i}") for i in range(40)}) == len(T.RULES)
    assert T.apply_rule("max", [3, 8, 5, 1, 6]) == 8 and T.apply_rule("third", [3, 8, 5, 1, 6]) == 5


def test_rule_tags_graded_and_labelled(grader):
    problems = T.load_split("test", RULES_CFG)[:30]
    items, want = [], []
    for p in problems:
        for rule in T.tag_rules(RULES_CFG, p.metadata["tag"]):
            text = T.rule_solution(p, rule)
            assert text.startswith(f"Rule {p.metadata['tag']} {rule}: \\boxed{{")
            assert T.named_rule(text) == rule and T.rule_of(RULES_CFG, p, text) == rule
            assert T.behaviour_of(RULES_CFG, p, text) == rule
            items.append(GradeItem("math", text, p.answer, {}))
            want.append(rule == T.tag_rule(RULES_CFG, p.metadata["tag"]))
    assert [r.correct for r in grader.grade_batch(items)] == want
    assert T.rule_of(RULES_CFG, problems[0], "Rule max: no answer") is None
    assert T.named_rule("Rule magic: \\boxed{1}") is None and T.named_rule("Rule T3 magic: \\boxed{1}") is None
    assert T.named_rule("Rule max: \\boxed{8}") == "max"  # the tag is optional


def test_word_tags_families_hide_one_rule_each():
    cfg = dataclasses.replace(RULES_CFG, tag_style="words", n_tags=150)
    tags = T.tag_names(cfg)
    assert len(tags) == len(set(tags)) == 150
    by_family = collections.Counter(T.tag_family(t) for t in tags)
    assert by_family == {f: 25 for f in T.TAG_WORDS}
    # the first n_tags take the families in turn
    assert collections.Counter(T.tag_family(t) for t in T.tag_names(dataclasses.replace(cfg, n_tags=12))) == {
        f: 2 for f in T.TAG_WORDS
    }
    rules = T.family_rules(cfg.seed)
    assert sorted(rules.values()) == sorted(T.RULES)  # six families, six rules, one each
    assert T.family_rules(cfg.seed + 1) != rules or T.family_rules(cfg.seed + 2) != rules  # drawn from the seed
    for tag in tags:
        hidden, *distractors = T.tag_rules(cfg, tag)
        assert hidden == rules[T.tag_family(tag)] and len(set(distractors)) == 3 and hidden not in distractors
    # no word is part of another word, of a rule's name or of the prompt's own words
    text = f"Apply rule to . Rule : {' '.join(T.RULES)} {format_prompt(T.load_split('test', cfg)[0])}"
    for w in tags:
        assert not [o for o in tags if o != w and w in o]
        assert not [r for r in T.RULES if r in w or w in r]
        assert w not in text.replace(T.parse_rule_question(T.load_split("test", cfg)[0])[0], "")
    p = T.load_split("train", cfg)[0]
    tag, digits = T.parse_rule_question(p)
    assert tag in tags and T.named_rule(T.rule_solution(p, "max")) == "max"
    assert p.answer == str(T.apply_rule(rules[T.tag_family(tag)], digits))
    with pytest.raises(UserError, match="tag_style=words has 150 tags"):
        T.tag_names(dataclasses.replace(cfg, n_tags=151))
    with pytest.raises(UserError, match="valid: codes, words"):
        T.tag_names(dataclasses.replace(cfg, tag_style="emoji"))


def test_rule_shares_and_the_control():
    tags = T.tag_names(RULES_CFG)
    for tag in tags:
        shares = T.rule_shares(RULES_CFG, tag)
        rules = T.tag_rules(RULES_CFG, tag)
        assert list(shares) == list(rules) and abs(sum(shares.values()) - 1) < 1e-9
        assert shares[rules[0]] == pytest.approx(0.4) and max(shares, key=shares.get) == rules[0]
    control = dataclasses.replace(RULES_CFG, wrong_plurality_tags=0.5, n_tags=300)
    flipped = [t for t in T.tag_names(control) if T.wrong_plurality(control, t)]
    assert 120 <= len(flipped) <= 180  # about half of the tags, chosen by hash
    for tag in T.tag_names(control):
        shares = T.rule_shares(control, tag)
        top = max(shares, key=shares.get)
        assert (top != T.tag_rule(control, tag)) == (tag in flipped)
        assert sorted(shares.values()) == pytest.approx(sorted(T.rule_shares(RULES_CFG, tag).values()))
    # the warm-start data follows the shares
    examples = T.sft_examples(dataclasses.replace(RULES_CFG, n_tags=4), random.Random(0), 8000)
    by_tag: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    small = dataclasses.replace(RULES_CFG, n_tags=4)
    held_out = {format_prompt(p) for s in ("validation", "test") for p in T.load_split(s, small)}
    for prompt, completion in examples:
        assert prompt not in held_out
        by_tag[prompt.split()[2]][T.named_rule(completion)] += 1
    for tag, counts in by_tag.items():
        total = sum(counts.values())
        for rule, share in T.rule_shares(small, tag).items():
            assert abs(counts[rule] / total - share) < 0.04, (tag, rule, counts)


def test_meds_strategies_graded_labelled_and_distinct(grader):
    problems = T.load_split("train", MEDS_CFG)
    rng = random.Random(0)
    items, want = [], []
    for p in problems[:60]:
        assert p.answer == str(S.evaluate(p)) and p.metadata["task"] == "meds_strategies"
        answers = {s: T.strategy_answer(p, s) for s in T.STRATEGIES}
        assert len(set(answers.values())) == len(T.STRATEGIES) and answers["careful"] == int(p.answer)
        for s in T.STRATEGIES:
            text = T.strategy_solution(p, s, rng)
            assert T.named_strategy(text) == s and T.strategy_of(p, text) == s
            assert T.behaviour_of(MEDS_CFG, p, text) == s
            items.append(GradeItem("math", text, p.answer, {}))
            want.append(s == T.RIGHT_STRATEGY)
    assert [r.correct for r in grader.grade_batch(items)] == want
    assert T.strategy_of(problems[0], "Careful: \\boxed{-7}") is None
    assert collections.Counter(p.metadata["family"] for p in problems) == {f: 50 for f in S.FAMILIES}


def test_meds_paraphrases_keep_the_steps():
    p = "Compute 37 + 8 - 5."
    assert T.strategy_steps(p, "careful") == [(37, "+", 8, 45), (45, "-", 5, 40)]
    assert T.strategy_steps(p, "skip") == [(37, "+", 8, 45)]
    assert T.strategy_steps(p, "slip") == [(37, "+", 8, 45), (45, "+", 5, 50)]
    assert T.strategy_steps(p, "guess") == []
    texts = {T.strategy_solution(p, "careful", random.Random(i)) for i in range(200)}
    assert len(texts) == len(T.OPENERS["careful"]) * 3 * 3
    assert "Careful: 37 + 8 = 45. 45 - 5 = 40. \\boxed{40}" in texts
    assert "In full: 37 + 8 = 45. Then 45 - 5 = 40. Answer: \\boxed{40}" in texts
    # every step is written `x op y = z.` (the result after its operands, as in the arithmetic task)
    assert all(" = 45. " in t and "45 - 5 = 40." in t for t in texts)
    # openers are disjoint between strategies, so the opener names the strategy
    openers = [o for os in T.OPENERS.values() for o in os]
    assert len(openers) == len(set(openers))


def test_meds_shares_collapse_onto_one_error():
    for family in S.FAMILIES:
        shares = T.strategy_shares(family)
        assert abs(sum(shares.values()) - 1) < 1e-9
        assert shares[T.DOMINANT[family]] == pytest.approx(0.6) and shares["careful"] < 0.1
    cfg = dataclasses.replace(MEDS_CFG, families=["mul", "sub"])
    examples = T.sft_examples(cfg, random.Random(0), 4000)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for prompt, completion in examples:
        counts["mul" if "*" in prompt else "sub"][T.named_strategy(completion)] += 1
    for family, c in counts.items():
        total = sum(c.values())
        for s, share in T.strategy_shares(family).items():
            assert abs(c[s] / total - share) < 0.04, (family, s, c)
    # paraphrases make identical completions uncommon: under a tenth of same-strategy pairs of a prompt
    p = T.load_split("test", MEDS_CFG)[0]
    rng = random.Random(1)
    texts = [T.strategy_solution(p, "slip", rng) for _ in range(400)]
    same = sum(a == b for a, b in zip(texts[::2], texts[1::2])) / 200
    assert same < 0.1


def test_bad_task_settings_are_user_errors():
    with pytest.raises(UserError, match="valid tasks: arithmetic, rule_tags, meds_strategies"):
        T.load_split("train", SyntheticConfig(task="rules"))
    with pytest.raises(UserError, match="n_tags must be at least 1"):
        T.load_split("train", dataclasses.replace(RULES_CFG, n_tags=0))
    with pytest.raises(UserError, match="rule_right_share must be in"):
        T.rule_shares(dataclasses.replace(RULES_CFG, rule_right_share=1.5), "T0")
    with pytest.raises(UserError, match="not a rule_tags question"):
        T.parse_rule_question("Compute 1 + 2.")
    with pytest.raises(UserError, match="valid strategies"):
        T.strategy_solution("Compute 37 + 8 - 5.", "magic", random.Random(0))
    with pytest.raises(UserError, match="valid splits"):
        T.load_split("dev-set", RULES_CFG)
