"""Synthetic tasks built for one method's claim each (`data.synthetic.task`; docs/toys.md).

`arithmetic` (the default, `memrl.data.synthetic`) mixes one careful behaviour with three shortcut forms.
It shows GRPO learning, but neither paper's gain (issue 21): the families transfer, so labelling a fifth
of the queries already teaches what all of them do (no headroom for MemReward), and the wrong forms are
rare enough that DAPO's filter keeps MEDS away from the groups where it could act. This module holds the
two tasks built so that each mechanism has room to act. Both are graded by the ordinary math grader (an
integer in `\\boxed{}`), and both can tell, from a completion, which behaviour produced it.

``rule_tags`` (MemReward: weak transfer, a visible cue)
-------------------------------------------------------
"Apply rule falcon to 3 8 5 1." Each of `n_tags` tags hides one rule out of `RULES` (first, second,
third, last, max, min of the four digits). With `tag_style=codes` (`T17`) a tag's rule is drawn from (seed,
tag) alone; with `tag_style=words` (the preset) the tags are words of six families (`TAG_WORDS`) and a
family's tags hide the same rule (`family_rules`). A completion repeats the tag, names the rule it applies,
then boxes its value::

    Rule T17 max: \\boxed{8}

The warm-start data (`rule_sft_examples`) gives each tag four rules: the hidden one with share
`rule_right_share` (0.4) and three distractor rules (drawn per tag) sharing the rest (0.2 each), so the
most frequent answer of a group is informative (consensus) but right only part of the time, and a tag's
rule says nothing about another tag's (weak transfer: a labelled tag teaches nothing about an unlabelled
one; with words, only through its family). With `wrong_plurality_tags` = 0.5 (the control) half of the tags, chosen by hash, swap the shares of
the hidden rule and one distractor, so a wrong rule is the plurality there and consensus misleads.
Problems are drawn so that the four rules of the tag give four different answers, so the boxed value
alone tells which of them was applied (`rule_of`), and so does the rule's name (`named_rule`).

``meds_strategies`` (MEDS: error collapse)
------------------------------------------
The arithmetic questions (`memrl.data.synthetic`, "Compute 37 + 8 - 5."), with the four behaviours of
that task as strategies (`STRATEGIES`: careful is right; guess, skip and slip are wrong), but shares
that collapse onto one error: per family one dominant wrong strategy (`DOMINANT`, share 0.60), the two
other wrong ones 0.16 each and the right one 0.08, so that most groups of eight hold no correct answer
and the wrong ones mostly repeat one error. Each strategy is written in up to `len(OPENERS[s]) x 3 x 3`
paraphrases (opener, how steps are joined, closing), drawn uniformly, so identical completions are uncommon
while the strategy stays the same; every step is written `x op y = z.`, so the tiny model learns one way to
compute (data/meds_strategies.yaml keeps to levels 1-2, at most three operations, for the same reason). Problems are drawn so that the four strategies give four different
answers, so each rollout's strategy is recoverable from its boxed value (`strategy_of`), and from its
opener (`named_strategy`); this is the label a `meds.cluster_source=oracle` diagnostic control needs.

Splits: as in `memrl.data.synthetic`, a question belongs to one split by a hash of (seed, question text),
and `load_split` is deterministic given the seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections.abc import Sequence
from typing import Any

from memrl.data.problem import Problem
from memrl.errors import UserError

TASKS = ("arithmetic", "rule_tags", "meds_strategies")

# ---------------------------------------------------------------------------------------------------
# common


def _unit(*parts: object) -> float:
    """A number in [0, 1) from a hash of the parts (stable across runs and machines)."""
    key = "\x00".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


def check_task(task: str) -> str:
    """`task` if it is one of `TASKS`, else a UserError naming the choices."""
    if task not in TASKS:
        raise UserError(f"unknown data.synthetic.task {task!r}; valid tasks: {', '.join(TASKS)}")
    return task


def _size(cfg: Any, split: str) -> int:
    return {"train": cfg.train_size, "validation": cfg.val_size, "test": cfg.test_size}[split]


def _boxed_int(completion: str) -> int | None:
    m = re.findall(r"\\boxed\{(-?\d+)\}", completion)
    return int(m[-1]) if m else None


# ---------------------------------------------------------------------------------------------------
# rule_tags

RULES = ("first", "second", "third", "last", "max", "min")
# rules a tag's warm-start data uses: the hidden one and this many distractors
RULE_DISTRACTORS = 3
RULE_DIGITS = 4
_RULE_QUESTION_RE = re.compile(rf"^Apply rule ([A-Za-z]\w*) to (\d(?: \d){{{RULE_DIGITS - 1}}})\.$")
# `Rule T17 max:` (the tag, then the rule); the tag is optional so that `Rule max:` still parses
_RULE_NAME_RE = re.compile(r"^\s*Rule (?:[A-Za-z]\w* )?(\w+):")
TAG_STYLES = ("codes", "words")
# tag_style=words: six families of words, one per rule (which family hides which rule is drawn from the seed). A
# family's words are alike to a sentence encoder (MemReward's MiniLM) and unrelated to the policy, whose tiny
# tokenizer gives every tag a token of its own: the GNN can carry a labelled tag's rule to the unlabelled tags of
# its family, training on the labelled queries alone (R1-p) cannot. No word is part of another, of a rule's
# name or of the prompt's words (tests/data/test_toys.py).
TAG_WORDS = {
    "birds": (
        "falcon eagle hawk sparrow pigeon parrot heron raven robin swallow pelican penguin kingfisher ostrich "
        "vulture magpie finch canary seagull woodpecker albatross peacock toucan condor owl"
    ).split(),
    "fruits": (
        "apple banana cherry mango peach plum grape lemon orange pear kiwi melon apricot papaya guava lychee "
        "coconut fig lime raspberry strawberry blueberry tangerine nectarine pomegranate"
    ).split(),
    "vehicles": (
        "truck bicycle tractor scooter motorcycle tram bus van taxi ambulance limousine wagon sedan jeep airplane "
        "helicopter yacht canoe ferry submarine rocket sled skateboard carriage trolley"
    ).split(),
    "body": (
        "elbow knee shoulder ankle wrist thumb finger spine skull lung liver kidney heart stomach tongue eyebrow "
        "forehead cheek heel hip jaw throat belly navel nostril"
    ).split(),
    "instruments": (
        "violin cello trumpet flute piano guitar drum harp clarinet oboe saxophone trombone tuba banjo ukulele "
        "accordion harmonica mandolin xylophone bassoon piccolo tambourine cymbal bagpipe sitar"
    ).split(),
    "countries": (
        "france germany spain italy japan china brazil canada mexico egypt kenya india norway sweden poland "
        "greece turkey chile peru cuba iran nepal ghana russia austria"
    ).split(),
}


def apply_rule(rule: str, digits: Sequence[int]) -> int:
    """The value of a rule on a list of digits."""
    if rule == "first":
        return digits[0]
    if rule == "second":
        return digits[1]
    if rule == "third":
        return digits[2]
    if rule == "last":
        return digits[-1]
    if rule == "max":
        return max(digits)
    if rule == "min":
        return min(digits)
    raise UserError(f"unknown rule {rule!r}; valid rules: {', '.join(RULES)}")


def tag_names(cfg: Any) -> list[str]:
    """The tags of the task: `T0` ... `T<n_tags - 1>` (tag_style=codes), or the first n_tags words taken from the
    families in turn (tag_style=words: every family has n_tags / 6 of them, give or take one)."""
    if cfg.n_tags < 1:
        raise UserError(f"data.synthetic.n_tags must be at least 1, got {cfg.n_tags}")
    style = cfg.tag_style
    if style == "codes":
        return [f"T{i}" for i in range(cfg.n_tags)]
    if style != "words":
        raise UserError(f"unknown data.synthetic.tag_style={style!r}; valid: {', '.join(TAG_STYLES)}")
    words = [w for group in zip(*TAG_WORDS.values()) for w in group]
    if cfg.n_tags > len(words):
        raise UserError(f"data.synthetic.tag_style=words has {len(words)} tags, got n_tags={cfg.n_tags}")
    return words[: cfg.n_tags]


_FAMILY_OF = {word: family for family, words in TAG_WORDS.items() for word in words}


def tag_family(tag: str) -> str | None:
    """The family of a word tag (None for a code tag)."""
    return _FAMILY_OF.get(tag)


def family_rules(seed: int) -> dict[str, str]:
    """Which rule each family of word tags hides: a permutation of RULES drawn from the seed."""
    rules = list(RULES)
    random.Random(f"memrl-rule-tags-families/{seed}").shuffle(rules)
    return dict(zip(TAG_WORDS, rules))


def tag_rules(cfg: Any, tag: str) -> tuple[str, ...]:
    """The rules of a tag's warm-start data: the hidden (right) rule first (a word tag's: its family's), then its
    distractors (drawn per tag)."""
    rng = random.Random(f"memrl-rule-tags/{cfg.seed}/{tag}")
    family = tag_family(tag)
    if family is None:
        return tuple(rng.sample(RULES, 1 + RULE_DISTRACTORS))
    hidden = family_rules(cfg.seed)[family]
    return (hidden, *rng.sample([r for r in RULES if r != hidden], RULE_DISTRACTORS))


def tag_rule(cfg: Any, tag: str) -> str:
    """The rule a tag hides (what grading rewards)."""
    return tag_rules(cfg, tag)[0]


def wrong_plurality(cfg: Any, tag: str) -> bool:
    """Whether the control (`wrong_plurality_tags`) makes a wrong rule the plurality on this tag."""
    return _unit("memrl-rule-tags-control", cfg.seed, tag) < cfg.wrong_plurality_tags


def rule_shares(cfg: Any, tag: str) -> dict[str, float]:
    """Share of each rule in a tag's warm-start data (right: `rule_right_share`; the rest split evenly).

    On a control tag (`wrong_plurality`) the first distractor takes the right rule's share and the right
    rule the distractor's.
    """
    if not 0 < cfg.rule_right_share < 1:
        raise UserError(f"data.synthetic.rule_right_share must be in (0, 1), got {cfg.rule_right_share}")
    rules = tag_rules(cfg, tag)
    rest = (1 - cfg.rule_right_share) / RULE_DISTRACTORS
    shares = {r: rest for r in rules[1:]} | {rules[0]: cfg.rule_right_share}
    if wrong_plurality(cfg, tag):
        right, first_wrong = rules[0], rules[1]
        shares[right], shares[first_wrong] = shares[first_wrong], shares[right]
    return {r: shares[r] for r in rules}


def rule_question(tag: str, digits: Sequence[int]) -> str:
    return f"Apply rule {tag} to {' '.join(map(str, digits))}."


def parse_rule_question(problem: Problem | str) -> tuple[str, list[int]]:
    """(tag, digits) of a rule_tags question."""
    question = problem.question if isinstance(problem, Problem) else problem
    m = _RULE_QUESTION_RE.match(question.strip())
    if not m:
        raise UserError(f"not a rule_tags question: {question!r}")
    return m.group(1), [int(d) for d in m.group(2).split()]


def rule_solution(problem: Problem | str, rule: str) -> str:
    """The completion that applies `rule`: it repeats the tag and names the rule, then boxes the value. The
    rule's name comes right after the tag (one token, `memrl.policy.tiny_toys.toy_tokenizer`), so the model
    predicts it at the tag's own position instead of routing the tag through attention."""
    tag, digits = parse_rule_question(problem)
    return f"Rule {tag} {rule}: \\boxed{{{apply_rule(rule, digits)}}}"


def named_rule(completion: str) -> str | None:
    """The rule a completion names in its first words, or None."""
    m = _RULE_NAME_RE.match(completion)
    return m.group(1) if m and m.group(1) in RULES else None


def rule_of(cfg: Any, problem: Problem, completion: str) -> str | None:
    """Which of the tag's rules gives the completion's boxed value (unique by construction), or None."""
    tag, digits = parse_rule_question(problem)
    value = _boxed_int(completion)
    hits = [r for r in tag_rules(cfg, tag) if apply_rule(r, digits) == value]
    return hits[0] if hits else None


def _draw_rule_problem(cfg: Any, rng: random.Random, tag: str) -> list[int]:
    rules = tag_rules(cfg, tag)
    while True:
        digits = [rng.randint(0, 9) for _ in range(RULE_DIGITS)]
        if len({apply_rule(r, digits) for r in rules}) == len(rules):
            return digits


def _rule_problem(cfg: Any, split: str, i: int, tag: str, digits: list[int]) -> Problem:
    question = rule_question(tag, digits)
    return Problem(
        id=f"rule_tags-{split}-{i:05d}",
        question=question,
        answer=str(apply_rule(tag_rule(cfg, tag), digits)),
        domain="math",
        source="synthetic",
        metadata={"task": "rule_tags", "tag": tag, "digits": digits},
    )


def _sample_rule(cfg: Any, rng: random.Random, tag: str, split: str) -> list[int]:
    for _ in range(100_000):
        digits = _draw_rule_problem(cfg, rng, tag)
        if _split_of(rule_question(tag, digits), cfg.seed) == split:
            return digits
    raise UserError(f"could not draw a rule_tags problem for tag {tag}")  # pragma: no cover


def _split_of(question: str, seed: int) -> str:
    from memrl.data.synthetic import _split_of as split_of

    return split_of(question, seed)


def load_rule_tags(split: str, cfg: Any) -> list[Problem]:
    """The problems of one split: problem i has tag i mod n_tags, so every tag has the same count."""
    tags = tag_names(cfg)
    rng = random.Random(f"memrl-rule-tags/{cfg.seed}/{split}")
    seen: set[str] = set()
    problems: list[Problem] = []
    while len(problems) < _size(cfg, split):
        tag = tags[len(problems) % len(tags)]
        digits = _sample_rule(cfg, rng, tag, split)
        q = rule_question(tag, digits)
        if q in seen:
            continue
        seen.add(q)
        problems.append(_rule_problem(cfg, split, len(problems), tag, digits))
    return problems


def rule_sft_examples(cfg: Any, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Warm-start (prompt, completion) pairs: train-split questions, each rule drawn with `rule_shares`."""
    from memrl.data.templates import format_prompt

    tags = tag_names(cfg)
    out = []
    for i in range(n):
        tag = tags[rng.randrange(len(tags))]
        digits = _sample_rule(cfg, rng, tag, "train")
        p = _rule_problem(cfg, "train", i, tag, digits)
        shares = rule_shares(cfg, tag)
        rule = rng.choices(list(shares), weights=list(shares.values()))[0]
        out.append((format_prompt(p, style="plain"), rule_solution(p, rule)))
    return out


# ---------------------------------------------------------------------------------------------------
# meds_strategies

STRATEGIES = ("careful", "guess", "skip", "slip")
RIGHT_STRATEGY = "careful"
# the dominant wrong strategy of each family
DOMINANT = {"add": "slip", "sub": "skip", "mul": "guess", "mix": "slip"}
DOMINANT_SHARE = 0.60
RIGHT_SHARE = 0.08
# each strategy's openers (disjoint between strategies, so the opener names the strategy)
OPENERS = {
    "careful": ("Careful:", "Step by step:", "In full:"),
    "guess": ("Guess:", "At a glance:", "Roughly:"),
    "skip": ("Short:", "Briefly:", "In short:"),
    "slip": ("Quick:", "Fast:", "Swiftly:"),
}
# how steps are joined; every step is written `x op y = z.` as in the arithmetic task, so the model learns
# one computation (a look-ahead wording such as `z = x op y.` asks for the result before its operands)
_STEP_JOINS = (" ", " Then ", " Next ")
# how the answer is given
_CLOSINGS = ("\\boxed{{{v}}}", "So \\boxed{{{v}}}", "Answer: \\boxed{{{v}}}")
# guess writes no steps; its middle part is one of these
_GUESS_WORDS = ("it looks like {v}.", "about {v}.", "I say {v}.")


def strategy_shares(family: str) -> dict[str, float]:
    """Share of each strategy in the warm-start data of a family."""
    dominant = DOMINANT[family]
    others = [s for s in STRATEGIES if s not in (dominant, RIGHT_STRATEGY)]
    rest = (1 - DOMINANT_SHARE - RIGHT_SHARE) / len(others)
    return {s: RIGHT_SHARE if s == RIGHT_STRATEGY else DOMINANT_SHARE if s == dominant else rest for s in STRATEGIES}


def strategy_answer(problem: Problem | str, strategy: str) -> int:
    """The value a strategy boxes (the arithmetic task's form of the same name)."""
    from memrl.data.synthetic import boxed_value, solution

    value = boxed_value(solution(problem, strategy))
    assert value is not None
    return value


def strategy_steps(problem: Problem | str, strategy: str) -> list[tuple]:
    """The steps (x, op, y, z) a strategy writes (none for guess)."""
    from memrl.data.synthetic import _FLIP, _apply, _chain, _parse

    operands, ops = _parse(problem)
    if strategy == "guess":
        return []
    if strategy == "slip":
        ops = list(ops[:-1]) + [_FLIP[ops[-1]]]
    steps = _chain(operands, ops, _apply)
    return steps[:-1] if strategy == "skip" else steps


def strategy_solution(problem: Problem | str, strategy: str, rng: random.Random) -> str:
    """One paraphrase of a strategy's completion (opener, step wording and closing drawn from `rng`)."""
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    value = strategy_answer(problem, strategy)
    opener = rng.choice(OPENERS[strategy])
    closing = rng.choice(_CLOSINGS).format(v=value)
    if strategy == "guess":
        middle = rng.choice(_GUESS_WORDS).format(v=value)
    else:
        join = rng.choice(_STEP_JOINS)
        middle = join.join(f"{x} {op} {y} = {z}." for x, op, y, z in strategy_steps(problem, strategy))
    return " ".join(part for part in (opener, middle, closing) if part)


def named_strategy(completion: str) -> str | None:
    """The strategy a completion's opener names, or None."""
    head = completion.lstrip()
    for strategy, openers in OPENERS.items():
        if any(head.startswith(o) for o in openers):
            return strategy
    return None


def strategy_of(problem: Problem, completion: str) -> str | None:
    """The strategy whose answer the completion boxes (unique by construction), or None (another value)."""
    value = _boxed_int(completion)
    hits = [s for s in STRATEGIES if strategy_answer(problem, s) == value]
    return hits[0] if hits else None


def _distinct_strategies(question: str) -> bool:
    return len({strategy_answer(question, s) for s in STRATEGIES}) == len(STRATEGIES)


def _draw_meds(cfg: Any, rng: random.Random, family: str, split: str) -> tuple[str, list, list, int]:
    from memrl.data.synthetic import _draw, _question

    levels = [int(lv) for lv in cfg.levels]
    for _ in range(100_000):
        level = levels[rng.randrange(len(levels))]
        drawn = _draw(rng, family, level)
        if drawn is None:
            continue
        question = _question(*drawn)
        if _distinct_strategies(question) and _split_of(question, cfg.seed) == split:
            return question, *drawn, level
    raise UserError(f"could not draw a meds_strategies {family} problem with levels {levels}")  # pragma: no cover


def _meds_problem(split: str, i: int, question: str, operands: list, ops: list, family: str, level: int) -> Problem:
    from memrl.data.synthetic import _problem

    p = _problem(split, i, question, operands, ops, family, level)
    return dataclasses.replace(
        p, id=f"meds_strategies-{split}-{i:05d}", metadata={"task": "meds_strategies", **p.metadata}
    )


def load_meds_strategies(split: str, cfg: Any) -> list[Problem]:
    """The problems of one split, cycling through the configured families (levels drawn at random)."""
    from memrl.data.synthetic import _check

    families = list(cfg.families)
    _check(families, [int(lv) for lv in cfg.levels])
    rng = random.Random(f"memrl-meds-strategies/{cfg.seed}/{split}")
    seen: set[str] = set()
    problems: list[Problem] = []
    repeats = 0
    while len(problems) < _size(cfg, split):
        family = families[len(problems) % len(families)]
        question, operands, ops, level = _draw_meds(cfg, rng, family, split)
        if question in seen:
            repeats += 1
            if repeats > 10_000:
                raise UserError(
                    f"meds_strategies {split} split: {_size(cfg, split)} problems exceed what families "
                    f"{families} and levels {list(cfg.levels)} can make without repeats; lower the size"
                )
            continue
        seen.add(question)
        problems.append(_meds_problem(split, len(problems), question, operands, ops, family, level))
    return problems


def meds_sft_examples(cfg: Any, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Warm-start pairs: fresh train-split questions, strategy drawn with `strategy_shares`, one paraphrase."""
    from memrl.data.templates import format_prompt

    families = list(cfg.families)
    out = []
    for i in range(n):
        family = families[i % len(families)]
        question, operands, ops, level = _draw_meds(cfg, rng, family, "train")
        p = _meds_problem("train", i, question, operands, ops, family, level)
        shares = strategy_shares(family)
        strategy = rng.choices(list(shares), weights=list(shares.values()))[0]
        out.append((format_prompt(p, style="plain"), strategy_solution(p, strategy, rng)))
    return out


# ---------------------------------------------------------------------------------------------------
# dispatch


def load_split(split: str, cfg: Any) -> list[Problem]:
    """The problems of one split of the configured task (`cfg.task`)."""
    from memrl.data import synthetic

    task = check_task(getattr(cfg, "task", "arithmetic"))
    if task == "arithmetic":
        return synthetic.load_split(split, cfg)
    split = synthetic.normalize_split(split)
    return load_rule_tags(split, cfg) if task == "rule_tags" else load_meds_strategies(split, cfg)


def sft_examples(cfg: Any, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Warm-start (prompt, completion) pairs of the configured task."""
    from memrl.data import synthetic

    task = check_task(getattr(cfg, "task", "arithmetic"))
    if task == "arithmetic":
        return synthetic.sft_examples(cfg, rng, n=n)
    return rule_sft_examples(cfg, rng, n) if task == "rule_tags" else meds_sft_examples(cfg, rng, n)


def behaviour_of(cfg: Any, problem: Problem, completion: str) -> str | None:
    """The behaviour that produced a completion, read from its answer: the rule (rule_tags), the strategy
    (meds_strategies) or the arithmetic form; None when the answer matches none of them."""
    task = check_task(getattr(cfg, "task", "arithmetic"))
    if task == "rule_tags":
        return rule_of(cfg, problem, completion)
    if task == "meds_strategies":
        return strategy_of(problem, completion)
    from memrl.data.synthetic import classify_form

    return classify_form(completion)
