"""The synthetic arithmetic task of the embedded default.

Problems are short left-to-right chains such as "Compute 37 + 8 - 5." whose worked solution writes one
equation per operation and ends with the answer in `\\boxed{}`::

    Careful: 37 + 8 = 45. 45 - 5 = 40. \\boxed{40}

Families and levels
-------------------
Four families (`FAMILIES`), recognisable from the question's operators, so that problems of a family are
similar to each other and query similarity carries information about correctness (what MemReward needs):

- ``add``: a number 10-39 plus numbers 1-5, ``Compute 37 + 4 + 5.``
- ``sub``: a number 15-49 minus numbers 1-5, ``Compute 44 - 3 - 5.``
- ``mul``: a small product (2-9 times 2-5), then additions or subtractions of 1-5, ``Compute 7 * 4 + 3.``
- ``mix``: a number 10-49, then both additions and subtractions of numbers 1-5, ``Compute 32 + 5 - 4.``

Level ``l`` (1-3) has ``l`` additions or subtractions after the head (the first number, or the product of
``mul``); ``mix``, which must both add and subtract, has one more. So completions stay short (two to five
equations at most, under 50 tokens of the tiny model). Every step is "running value (at most two digits)
plus or minus 1-5", or one small table product: the arithmetic a ~1M-parameter model learns in a
few-minute supervised warm start (docs/data.md#the-synthetic-task: longer numbers are out of reach; with operands 1-9 and heads
up to 89 its careful steps were still wrong on most ``mix`` and ``mul`` problems). Longer chains are harder
because errors compound and because the model must find the right next number in the question. Every
value along the way, and every answer, is between 0 and 99.

Why the warm-start data mixes behaviours (see docs/data.md#the-synthetic-task)
------------------------------------------------------------------------------
This task exists so that RL with a verifiable reward visibly improves the tiny model within minutes on a
CPU. RL with verifiable rewards mostly *selects* among behaviours the policy already has; it cannot teach
arithmetic in minutes. So the supervised warm-start data (`sft_examples`) mixes one careful, correct
behaviour with three tempting wrong ones (`FORMS`), each announced by its first word (`FORM_MARKERS`, one
token each in the tiny model's tokenizer), so the choice of behaviour is the first token of a completion:

- ``careful`` ("Careful:"): every operation, in order. Correct by construction.
- ``guess`` ("Guess:"): no steps; boxes the first number of the question. A guessed answer.
- ``skip`` ("Short:"): correct steps, but stops one operation early and boxes that value. Off by one
  operation.
- ``slip`` ("Quick:"): every step computed correctly, but the last operator is read with the wrong sign
  (``45 + 5`` for ``45 - 5``). A systematic procedural bug.

The wrong forms never need arithmetic the careful form does not use, and never state a false equation
(a wrong form such as a dropped carry would teach the model false facts such as ``37 + 8 = 35`` next to
the true ones, which measurably slowed and destabilised the warm start). Problems on which a wrong form
would happen to give the right answer are never generated, so every wrong form is wrong on every
problem, and each wrong form repeats the same kind of error (MEDS has recurring patterns to cluster).

The share of each form in the warm-start data depends on the family (`FORM_SHARES`). In ``add`` the careful
form is the most frequent; in the other three families one wrong form (a different one in each) is more
frequent than the careful one. So greedy decoding takes the careful path on ``add`` only and starts low
overall, while sampling at temperature 1 takes it on 20-55% of the samples in every family, so that most
groups of eight samples hold a correct answer (a GRPO signal on most prompts). Because the choice is the
first token, RL can shift it with little data, and the shift carries over to held-out problems of the
same family; because the shares differ by family, a label-limited run that never sees a family's rewards
has less to go on for it. The measured numbers of the tiny model are in its build_info.json
(`memrl.policy.tiny`).

Splits
------
`load_split` is deterministic given the seed. A question belongs to exactly one split, decided by a hash of
(seed, question text), so splits are disjoint whatever their sizes, and each split is a prefix-stable
sequence (a larger ``test_size`` extends the test split, it does not reshuffle it). Problems cycle
through the configured families, and through the levels within a family, so every family has the same
number of problems; a (family, level) whose questions run out (mul level 1 has a few hundred) hands its
turns to the family's other levels.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from memrl.data.problem import Problem
from memrl.data.templates import format_prompt
from memrl.errors import UserError

FAMILIES = ("add", "sub", "mul", "mix")
LEVELS = (1, 2, 3)
SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}

# Behaviours of the warm-start data; `careful` is the only correct one.
FORMS = ("careful", "guess", "skip", "slip")
SHORTCUT_FORMS = ("guess", "skip", "slip")
# The first word of a completion names its form (one token in the tiny model's tokenizer).
FORM_MARKERS = {"careful": "Careful:", "guess": "Guess:", "skip": "Short:", "slip": "Quick:"}

# Share of each form in the warm-start data, per family. add: careful is the most frequent form, so greedy
# decoding starts right on add problems; sub / mul / mix: one wrong form (a different one each) is more
# frequent than the careful form, so greedy decoding starts wrong there, while sampling at temperature 1
# still takes the careful path on 20-25% of the samples.
FORM_SHARES: dict[str, dict[str, float]] = {
    "add": {"careful": 0.55, "guess": 0.15, "skip": 0.10, "slip": 0.20},
    "sub": {"careful": 0.25, "guess": 0.10, "skip": 0.50, "slip": 0.15},
    "mul": {"careful": 0.25, "guess": 0.50, "skip": 0.10, "slip": 0.15},
    "mix": {"careful": 0.20, "guess": 0.15, "skip": 0.10, "slip": 0.55},
}

# Fraction of all question hashes that go to each split (the rest is train).
_TEST_FRACTION = 0.1
_VAL_FRACTION = 0.1
# draws in a row that only repeat questions already in the split before a (family, level) counts as used up
_MAX_REPEATS = 500

_QUESTION_RE = re.compile(r"^Compute (\d+(?: [-+*] \d+)+)\.$")


# ---------------------------------------------------------------------------------------------------
# arithmetic


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


_FLIP = {"+": "-", "-": "+"}


def _chain(operands: Sequence[int], ops: Sequence[str], apply: Callable[[int, str, int], int]) -> list[tuple]:
    """The steps (x, op, y, result) of a left-to-right evaluation."""
    steps, x = [], operands[0]
    for op, y in zip(ops, operands[1:]):
        z = apply(x, op, y)
        steps.append((x, op, y, z))
        x = z
    return steps


def _render_steps(steps: Iterable[tuple]) -> str:
    return " ".join(f"{x} {op} {y} = {z}." for x, op, y, z in steps)


def _parse(problem: Problem | str) -> tuple[list[int], list[str]]:
    """Operands and operators of a synthetic question."""
    question = problem.question if isinstance(problem, Problem) else problem
    m = _QUESTION_RE.match(question.strip())
    if not m:
        raise UserError(f"not a synthetic arithmetic question: {question!r}")
    tokens = m.group(1).split(" ")
    return [int(t) for t in tokens[0::2]], tokens[1::2]


def evaluate(problem: Problem | str) -> int:
    """The exact value of a synthetic question (left to right; `*` only ever comes first)."""
    operands, ops = _parse(problem)
    return _chain(operands, ops, _apply)[-1][3]


# ---------------------------------------------------------------------------------------------------
# solutions: the careful form and the wrong forms


def careful_solution(problem: Problem | str) -> str:
    """The careful worked solution: every operation, then the answer. Always correct."""
    operands, ops = _parse(problem)
    steps = _chain(operands, ops, _apply)
    return f"{FORM_MARKERS['careful']} {_render_steps(steps)} \\boxed{{{steps[-1][3]}}}"


def guess_solution(problem: Problem | str) -> str:
    """Wrong form `guess`: no steps, the first number of the question boxed."""
    operands, _ = _parse(problem)
    return f"{FORM_MARKERS['guess']} \\boxed{{{operands[0]}}}"


def skip_solution(problem: Problem | str) -> str:
    """Wrong form `skip`: correct steps but the last operation is left out (off by one operation)."""
    operands, ops = _parse(problem)
    steps = _chain(operands, ops, _apply)[:-1]
    value = steps[-1][3] if steps else operands[0]
    body = f"{_render_steps(steps)} " if steps else ""
    return f"{FORM_MARKERS['skip']} {body}\\boxed{{{value}}}"


def slip_solution(problem: Problem | str) -> str:
    """Wrong form `slip`: every step computed right, but the last operator is read with the wrong sign."""
    operands, ops = _parse(problem)
    ops = list(ops[:-1]) + [_FLIP[ops[-1]]]
    steps = _chain(operands, ops, _apply)
    return f"{FORM_MARKERS['slip']} {_render_steps(steps)} \\boxed{{{steps[-1][3]}}}"


SOLVERS: dict[str, Callable[[Problem | str], str]] = {
    "careful": careful_solution,
    "guess": guess_solution,
    "skip": skip_solution,
    "slip": slip_solution,
}


def solution(problem: Problem | str, form: str) -> str:
    """The completion of `form` (one of `FORMS`) for a problem."""
    if form not in SOLVERS:
        raise UserError(f"unknown solution form {form!r}; valid forms: {', '.join(FORMS)}")
    return SOLVERS[form](problem)


def boxed_value(completion: str) -> int | None:
    """The integer in the last `\\boxed{}` of a completion of this task, or None."""
    m = re.findall(r"\\boxed\{(-?\d+)\}", completion)
    return int(m[-1]) if m else None


def classify_form(completion: str) -> str | None:
    """The form a completion announces with its first word, or None if it starts with none of them."""
    head = completion.lstrip()
    for form, marker in FORM_MARKERS.items():
        if head.startswith(marker):
            return form
    return None


# ---------------------------------------------------------------------------------------------------
# problem generation


def _draw(rng: random.Random, family: str, level: int) -> tuple[list[int], list[str]] | None:
    """One candidate (operands, ops) of a family and level; None when it breaks a rule of the task."""
    # `level` additions or subtractions after the head (the first number, or the product of mul); mix, which
    # both adds and subtracts, has one more
    n = level + 1 if family == "mix" else level
    # small numbers keep every step within what the tiny model learns in its warm start (module docstring)
    digits = [rng.randint(1, 5) for _ in range(n)]
    if family == "add":
        operands, ops = [rng.randint(10, 39)] + digits, ["+"] * n
    elif family == "sub":
        operands, ops = [rng.randint(15, 49)] + digits, ["-"] * n
    elif family == "mul":
        operands = [rng.randint(2, 9), rng.randint(2, 5)] + digits
        ops = ["*"] + [rng.choice("+-") for _ in range(n)]
    elif family == "mix":
        operands, ops = [rng.randint(10, 49)] + digits, [rng.choice("+-") for _ in range(n)]
        if len(set(ops)) < 2:
            return None
    else:  # pragma: no cover - callers validate families
        raise UserError(f"unknown synthetic family {family!r}; valid families: {', '.join(FAMILIES)}")
    steps = _chain(operands, ops, _apply)
    slipped = _chain(operands, list(ops[:-1]) + [_FLIP[ops[-1]]], _apply)
    gold = steps[-1][3]
    if any(z < 0 for *_, z in steps + slipped) or gold > 99:
        return None
    # every wrong form must be wrong on every problem
    question = _question(operands, ops)
    for form in SHORTCUT_FORMS:
        if boxed_value(SOLVERS[form](question)) == gold:
            return None
    return operands, ops


def _question(operands: Sequence[int], ops: Sequence[str]) -> str:
    expr = str(operands[0]) + "".join(f" {op} {y}" for op, y in zip(ops, operands[1:]))
    return f"Compute {expr}."


def _split_of(question: str, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}\x00{question}".encode()).digest()[:8], "big") / 2**64
    if h < _TEST_FRACTION:
        return "test"
    if h < _TEST_FRACTION + _VAL_FRACTION:
        return "validation"
    return "train"


def _check(families: Sequence[str], levels: Sequence[int]) -> None:
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise UserError(f"unknown synthetic families {bad}; valid families: {', '.join(FAMILIES)}")
    badl = [lv for lv in levels if lv not in LEVELS]
    if badl or not levels:
        raise UserError(f"unknown synthetic levels {badl}; valid levels: {', '.join(map(str, LEVELS))}")


def normalize_split(split: str) -> str:
    """`train`, `validation` (also `val`) or `test`; anything else is a UserError."""
    name = _SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        raise UserError(f"unknown synthetic split {split!r}; valid splits: train, validation (or val), test")
    return name


def _sample(rng: random.Random, family: str, level: int, split: str, seed: int) -> tuple[str, list, list]:
    for _ in range(100_000):
        drawn = _draw(rng, family, level)
        if drawn is None:
            continue
        question = _question(*drawn)
        if _split_of(question, seed) == split:
            return question, *drawn
    raise UserError(f"could not draw a synthetic {family} problem of level {level}")  # pragma: no cover


def _problem(split: str, i: int, question: str, operands: list, ops: list, family: str, level: int) -> Problem:
    return Problem(
        id=f"synthetic-{split}-{i:05d}",
        question=question,
        answer=str(evaluate(question)),
        domain="math",
        source="synthetic",
        metadata={"family": family, "level": level, "operands": list(operands), "ops": list(ops)},
    )


def load_split(split: str, cfg: Any) -> list[Problem]:
    """The problems of one split of the synthetic task.

    Args:
        split: "train", "validation" (or "val") or "test".
        cfg: a `SyntheticConfig` (seed, train_size, val_size, test_size, families, levels).

    Returns:
        `size` problems with ids `synthetic-<split>-<i:05d>`, deterministic given `cfg.seed`, unique within
        the split and disjoint from the other splits by question text.

    Raises:
        UserError: unknown split, family or level, or a size larger than the problem space allows.
    """
    split = normalize_split(split)
    families, levels = list(cfg.families), [int(lv) for lv in cfg.levels]
    _check(families, levels)
    size = {"train": cfg.train_size, "validation": cfg.val_size, "test": cfg.test_size}[split]
    rng = random.Random(f"memrl-synthetic/{cfg.seed}/{split}")
    seen: set[str] = set()
    problems: list[Problem] = []
    # A (family, level) cell whose questions run out (many draws in a row that are all repeats; the
    # smallest, mul level 1, has a few hundred) hands its turns to the family's next level.
    exhausted: set[tuple[str, int]] = set()
    while len(problems) < size:
        i = len(problems)
        family = families[i % len(families)]
        start = (i // len(families)) % len(levels)
        order = [levels[(start + k) % len(levels)] for k in range(len(levels))]
        open_levels = [lv for lv in order if (family, lv) not in exhausted]
        if not open_levels:
            raise UserError(
                f"synthetic {split} split: {size} problems exceed what family {family!r} can make without "
                f"repeats; lower data.synthetic.{'val' if split == 'validation' else split}_size"
            )
        level = open_levels[0]
        for _ in range(_MAX_REPEATS):
            question, operands, ops = _sample(rng, family, level, split, cfg.seed)
            if question not in seen:
                break
        else:
            exhausted.add((family, level))
            continue
        seen.add(question)
        problems.append(_problem(split, i, question, operands, ops, family, level))
    return problems


def sample_form(family: str, rng: random.Random) -> str:
    """Draw a solution form with the family's warm-start shares (`FORM_SHARES`)."""
    shares = FORM_SHARES[family]
    return rng.choices(FORMS, weights=[shares[f] for f in FORMS])[0]


def sft_examples(cfg: Any, rng: random.Random, n: int | None = None) -> list[tuple[str, str]]:
    """Supervised warm-start data: (prompt, completion) pairs mixing the careful and the wrong forms.

    Questions come from the train part of the problem space only (never a validation or test question);
    each example's form is drawn with its family's `FORM_SHARES`. The completion is the text after the
    prompt, without the end-of-sequence token (the trainer appends it).

    Args:
        cfg: a `SyntheticConfig`; its seed decides which questions are train questions.
        rng: the source of randomness for questions and forms.
        n: how many examples; None: one per problem of the train split (`cfg.train_size`), in order.
            With `n`, questions are drawn afresh (repeats possible), cycling through families and levels.

    Returns:
        A list of (prompt, completion) pairs; the prompt is the plain-style prompt of `format_prompt`.
    """
    families, levels = list(cfg.families), [int(lv) for lv in cfg.levels]
    _check(families, levels)
    if n is None:
        problems = load_split("train", cfg)
    else:
        problems = []
        for i in range(n):
            family = families[i % len(families)]
            level = levels[rng.randrange(len(levels))]
            question, operands, ops = _sample(rng, family, level, "train", cfg.seed)
            problems.append(_problem("train", i, question, operands, ops, family, level))
    out = []
    for p in problems:
        form = sample_form(p.metadata["family"], rng)
        out.append((format_prompt(p, style="plain"), solution(p, form)))
    return out
