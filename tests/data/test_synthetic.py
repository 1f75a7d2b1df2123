"""The synthetic arithmetic task: determinism, disjoint splits, correct careful solutions, wrong shortcuts."""

from __future__ import annotations

import collections
import dataclasses
import random
import re

import pytest

from memrl.config.schema import SyntheticConfig
from memrl.data import synthetic as S
from memrl.data.templates import format_prompt
from memrl.errors import UserError

STEP_RE = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


@pytest.fixture(scope="module")
def cfg() -> SyntheticConfig:
    return SyntheticConfig(seed=7, train_size=600, val_size=120, test_size=120)


@pytest.fixture(scope="module")
def splits(cfg) -> dict[str, list]:
    return {split: S.load_split(split, cfg) for split in ("train", "validation", "test")}


def test_sizes_ids_and_fields(cfg, splits):
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [600, 120, 120]
    for split, problems in splits.items():
        assert [p.id for p in problems] == [f"synthetic-{split}-{i:05d}" for i in range(len(problems))]
        for p in problems:
            assert p.domain == "math" and p.source == "synthetic"
            assert p.metadata["family"] in S.FAMILIES and p.metadata["level"] in S.LEVELS
            assert p.answer == str(S.evaluate(p)) and int(p.answer) >= 0
            assert re.fullmatch(r"Compute \d+( [-+*] \d+)+\.", p.question)
            family, level = p.metadata["family"], p.metadata["level"]
            additive = level + 1 if family == "mix" else level
            assert len(p.metadata["ops"]) == additive + (family == "mul")
            assert (p.metadata["ops"][0] == "*") == (family == "mul")


def test_deterministic_and_seed_dependent(cfg, splits):
    again = S.load_split("test", cfg)
    assert [(p.id, p.question, p.answer, p.metadata) for p in again] == [
        (p.id, p.question, p.answer, p.metadata) for p in splits["test"]
    ]
    other = S.load_split("test", dataclasses.replace(cfg, seed=8))
    assert [p.question for p in other] != [p.question for p in splits["test"]]


def test_val_alias_and_prefix_stable(cfg, splits):
    assert [p.question for p in S.load_split("val", cfg)] == [p.question for p in splits["validation"]]
    bigger = S.load_split("test", dataclasses.replace(cfg, test_size=200, train_size=10))
    assert [p.question for p in bigger[:120]] == [p.question for p in splits["test"]]


def test_splits_disjoint_and_unique(splits):
    questions = {s: [p.question for p in ps] for s, ps in splits.items()}
    for qs in questions.values():
        assert len(set(qs)) == len(qs)
    assert not set(questions["train"]) & set(questions["validation"])
    assert not set(questions["train"]) & set(questions["test"])
    assert not set(questions["validation"]) & set(questions["test"])


def test_families_balanced(splits):
    counts = collections.Counter(p.metadata["family"] for p in splits["test"])
    assert counts == {f: 30 for f in S.FAMILIES}


def test_default_train_split_fills_small_cells():
    # mul level 1 has only a few hundred questions: its extra turns go to other levels, no error
    problems = S.load_split("train", SyntheticConfig())
    assert len(problems) == 4000 and len({p.question for p in problems}) == 4000
    assert collections.Counter(p.metadata["family"] for p in problems) == {f: 1000 for f in S.FAMILIES}


def test_careful_solution_steps_are_right(splits):
    for p in splits["train"] + splits["test"]:
        text = S.careful_solution(p)
        assert text.startswith(S.FORM_MARKERS["careful"] + " ")
        steps = STEP_RE.findall(text)
        assert len(steps) == len(p.metadata["ops"])
        operands = p.metadata["operands"]
        running = operands[0]
        for (x, op, y, z), want_op, want_y in zip(steps, p.metadata["ops"], operands[1:]):
            assert (int(x), op, int(y)) == (running, want_op, want_y)
            assert int(z) == {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op]
            running = int(z)
        assert S.boxed_value(text) == int(p.answer) == running
        assert text.endswith(f"\\boxed{{{p.answer}}}")


def test_every_wrong_form_is_wrong(splits):
    for p in splits["train"] + splits["test"]:
        for form in S.SHORTCUT_FORMS:
            text = S.solution(p, form)
            assert text.startswith(S.FORM_MARKERS[form] + " ")
            assert S.classify_form(text) == form
            value = S.boxed_value(text)
            assert value is not None and value != int(p.answer), (p.question, form, text)


def test_wrong_forms_are_what_they_say():
    p = "Compute 37 + 8 - 5."
    assert S.careful_solution(p) == "Careful: 37 + 8 = 45. 45 - 5 = 40. \\boxed{40}"
    assert S.guess_solution(p) == "Guess: \\boxed{37}"
    assert S.skip_solution(p) == "Short: 37 + 8 = 45. \\boxed{45}"
    assert S.slip_solution(p) == "Quick: 37 + 8 = 45. 45 + 5 = 50. \\boxed{50}"
    assert S.slip_solution("Compute 64 - 7 - 9.") == "Quick: 64 - 7 = 57. 57 + 9 = 66. \\boxed{66}"
    assert S.slip_solution("Compute 7 * 4 + 8.") == "Quick: 7 * 4 = 28. 28 - 8 = 20. \\boxed{20}"


def test_form_shares_documented_and_reproduced():
    for family, shares in S.FORM_SHARES.items():
        assert set(shares) == set(S.FORMS) and abs(sum(shares.values()) - 1) < 1e-9
        # a wrong form is the most frequent one in every family but add
        top = max(shares, key=shares.get)
        assert (top == "careful") == (family == "add")
    cfg = SyntheticConfig(seed=3)
    examples = S.sft_examples(cfg, random.Random(0), n=8000)
    by_family: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for prompt, completion in examples:
        family = _family(prompt)
        by_family[family][S.classify_form(completion)] += 1
    for family, counts in by_family.items():
        total = sum(counts.values())
        assert total == 2000
        for form, share in S.FORM_SHARES[family].items():
            assert abs(counts[form] / total - share) < 0.04, (family, form, counts)


def test_sft_examples_are_train_only_and_well_formed():
    cfg = SyntheticConfig(seed=5, train_size=40, val_size=300, test_size=300)
    held_out = {format_prompt(p) for s in ("validation", "test") for p in S.load_split(s, cfg)}
    examples = S.sft_examples(cfg, random.Random(1), n=3000)
    assert len(examples) == 3000
    assert not {p for p, _ in examples} & held_out
    for prompt, completion in examples[:200]:
        assert prompt.endswith("\nPut the final answer in \\boxed{}.\n")
        assert S.classify_form(completion) in S.FORMS and "\\boxed{" in completion
    # without n: one example per train problem, in order
    one_each = S.sft_examples(cfg, random.Random(1))
    assert [p for p, _ in one_each] == [format_prompt(p) for p in S.load_split("train", cfg)]
    assert S.sft_examples(cfg, random.Random(1), n=50) == S.sft_examples(cfg, random.Random(1), n=50)


def test_unknown_split_family_level_are_user_errors():
    with pytest.raises(UserError, match="valid splits: train, validation"):
        S.load_split("dev-set", SyntheticConfig())
    with pytest.raises(UserError, match="valid families: add, sub, mul, mix"):
        S.load_split("test", SyntheticConfig(families=["add", "div"]))
    with pytest.raises(UserError, match="valid levels"):
        S.load_split("test", SyntheticConfig(levels=[4]))
    with pytest.raises(UserError, match="valid forms"):
        S.solution("Compute 1 + 9.", "magic")


def test_size_beyond_the_problem_space_is_a_user_error():
    with pytest.raises(UserError, match="lower data.synthetic.test_size"):
        S.load_split("test", SyntheticConfig(families=["mul"], levels=[1], test_size=500))


def _family(prompt: str) -> str:
    question = prompt.split("\n")[0]
    if "*" in question:
        return "mul"
    if "+" in question and "-" in question:
        return "mix"
    return "add" if "+" in question else "sub"
