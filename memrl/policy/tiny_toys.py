"""Tiny models for the toy tasks (`data.synthetic.task`, docs/toys.md), built on first use and cached.

`ensure_toy_model(synthetic_cfg, layers)` is `memrl.policy.tiny.ensure_tiny_model` for any task: the
arithmetic task with the default 4 layers is exactly the embedded default (same folder, same cache key);
every other (task, task settings, layers) gets its own folder
`<cache>/tiny-qwen2-v1-<task>-<layers>l-<key>`, whose key covers the build settings, the task's settings
(seed, tags, shares, families, levels: the warm start depends on all of them) and the data the build consumes
(`memrl.policy.tiny.build_key`), so changing any of them builds a new model instead of reusing a stale one, and
an edit of the code that leaves them as they are does not.

The build is the embedded default's (`memrl.policy.tiny`: byte-level BPE tokenizer trained on the
warm-start corpus, a Qwen2 of hidden 128, supervised warm start of `sft_steps` x `batch_size` examples),
with the task's warm-start data (`memrl.data.toys.sft_examples`) and `layers` decoder layers (MEDS's
feature has one value per layer pair, so `layers=8` gives it four values instead of two). Its measurement
is the task's preconditions on training prompts (`measure_toy`), written to build_info.json with the
build time.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from memrl.config.schema import SyntheticConfig
from memrl.data.templates import INSTRUCTIONS, format_prompt
from memrl.data.toys import (
    DOMINANT,
    RIGHT_STRATEGY,
    STRATEGIES,
    behaviour_of,
    check_task,
    load_split,
    named_rule,
    named_strategy,
    rule_shares,
    sft_examples,
    tag_names,
    tag_rules,
)
from memrl.errors import UserError
from memrl.policy import tiny

# settings of the task that decide its warm start (and so the model)
_TASK_FIELDS = {
    "arithmetic": ("seed", "families", "levels"),
    "rule_tags": ("seed", "n_tags", "tag_style", "rule_right_share", "wrong_plurality_tags"),
    "meds_strategies": ("seed", "families", "levels"),
}
# completions of meds_strategies run longer than the arithmetic task's (openers and step wordings)
_MAX_NEW_TOKENS = {"arithmetic": 64, "rule_tags": 24, "meds_strategies": 96}
# warm-start learning rate where it differs from the embedded default's 3e-3: at 3e-3 the rule_tags loss sits
# on a plateau (0.46 from step 80 to 640, 0.38 at the end); at 1e-3 it reaches 0.20 and the named rule is
# applied 67% of the time instead of 33% (docs/toys.md#rule_tags-with-code-tags-met-at-960-steps-4-layers)
_LR = {"rule_tags": 1e-3}


def task_settings(synthetic_cfg: Any) -> dict[str, Any]:
    """The settings of `synthetic_cfg` that decide the task's warm start (what the cache key covers)."""
    task = check_task(synthetic_cfg.task)
    out: dict[str, Any] = {"task": task}
    for name in _TASK_FIELDS[task]:
        value = getattr(synthetic_cfg, name)
        # lists (also omegaconf ListConfig) as plain lists, so the key does not depend on the container
        out[name] = value if isinstance(value, (str, int, float)) else [v for v in value]
    return out


def toy_build_settings(task: str, layers: int | None = None, sft_steps: int | None = None) -> tiny.TinySettings:
    """The embedded default's build settings with the task's generation length and learning rate, `layers`
    layers and `sft_steps` warm-start steps (None: the default's)."""
    settings = tiny.TinySettings()
    if sft_steps is not None:
        if sft_steps <= settings.warmup_steps:
            raise UserError(f"the warm start needs more than {settings.warmup_steps} steps, got sft_steps={sft_steps}")
        settings = dataclasses.replace(settings, sft_steps=int(sft_steps))
    if layers is not None:
        if layers < 1:
            raise UserError(f"the tiny model needs at least one layer, got layers={layers}")
        settings = dataclasses.replace(settings, num_hidden_layers=int(layers))
    return dataclasses.replace(settings, max_new_tokens=_MAX_NEW_TOKENS[task], lr=_LR.get(task, settings.lr))


def _is_default(synthetic_cfg: Any, layers: int | None, sft_steps: int | None = None) -> bool:
    default = SyntheticConfig()
    return (
        synthetic_cfg.task == "arithmetic"
        and sft_steps in (None, tiny.TinySettings().sft_steps)
        and layers in (None, tiny.TinySettings().num_hidden_layers)
        and task_settings(synthetic_cfg) == task_settings(default) | {"seed": synthetic_cfg.seed}
        and synthetic_cfg.seed == tiny.TinySettings().data_seed
    )


def toy_inputs(synthetic_cfg: Any, settings: tiny.TinySettings) -> tiny.BuildInputs:
    """The task's build data: `sft_steps * batch_size` warm-start examples (`memrl.data.toys.sft_examples`, seeded
    by `seed`), the first 20000 of them and the instruction lines for the tokenizer, and the training prompts the
    build measures on."""
    examples = sft_examples(synthetic_cfg, random.Random(settings.seed), settings.sft_steps * settings.batch_size)
    corpus = [p + c for p, c in examples[:20000]] + list(INSTRUCTIONS.values())
    task = task_settings(synthetic_cfg)["task"]
    measured = (
        load_split("train", _with_train_size(synthetic_cfg, _MEASURE_PROMPTS[task])) if task in _MEASURE_PROMPTS else []
    )
    return tiny.BuildInputs(examples, corpus, measured)


def toy_model_dir(
    synthetic_cfg: Any, layers: int | None = None, cache_dir: Path | None = None, sft_steps: int | None = None
) -> Path:
    """Where the task's tiny model lives (or will live) in the cache; builds nothing.

    `<cache>/tiny-qwen2-v1-<task>-<layers>l-<key>`: the key (`memrl.policy.tiny.build_key`) covers the build
    settings, the task's settings and the data the build consumes (`toy_inputs`), not the source code.
    """
    if _is_default(synthetic_cfg, layers, sft_steps):
        return tiny.tiny_model_dir(cache_dir)
    ts = task_settings(synthetic_cfg)
    settings = toy_build_settings(ts["task"], layers, sft_steps)
    cache_dir = Path(cache_dir) if cache_dir is not None else tiny.default_cache_dir()
    if ts["task"] == "arithmetic":  # the default's build with another data seed or size
        arith = dataclasses.replace(settings, data_seed=synthetic_cfg.seed)
        key = tiny.build_key(arith, lambda: tiny.build_inputs(arith), cache_dir, ts)
    else:
        key = tiny.build_key(settings, lambda: toy_inputs(synthetic_cfg, settings), cache_dir, ts)
    return cache_dir / f"{tiny.TINY_NAME}-{ts['task']}-{settings.num_hidden_layers}l-{key}"


def ensure_toy_model(
    synthetic_cfg: Any,
    layers: int | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    sft_steps: int | None = None,
) -> Path:
    """The directory of the task's tiny model, built first if it is not in the cache (lock per key, atomic)."""
    if _is_default(synthetic_cfg, layers, sft_steps):
        return tiny.ensure_tiny_model(cache_dir, progress=progress)
    target = toy_model_dir(synthetic_cfg, layers, cache_dir, sft_steps)
    announce = f"Building the tiny {synthetic_cfg.task} model in {target} (once)" if progress else None
    return tiny.ensure_built(
        target,
        lambda tmp: build_toy_model(tmp, synthetic_cfg, layers, progress=progress, sft_steps=sft_steps),
        announce,
    )


def toy_tokenizer(synthetic_cfg: Any, corpus: Sequence[str], settings: tiny.TinySettings) -> Any:
    """The embedded default's tokenizer trained on `corpus`; for rule_tags every tag is added as one token
    (matched longest first, so `T17` is not `T1` + `7`): the model keys a tag's rules on one embedding
    instead of combining the tag's digit tokens (with digit tokens it learned only the rules' overall mix)."""
    tokenizer = tiny.train_tokenizer(corpus, settings.vocab_size)
    if synthetic_cfg.task == "rule_tags":
        tokenizer.add_tokens(tag_names(synthetic_cfg))
    return tokenizer


def build_toy_model(
    out_dir: Path, synthetic_cfg: Any, layers: int | None = None, progress: bool = True, sft_steps: int | None = None
) -> dict:
    """Build the task's tiny model into `out_dir` (tokenizer, warm start, preconditions); returns the info."""
    ts = task_settings(synthetic_cfg)
    settings = toy_build_settings(ts["task"], layers, sft_steps)
    if ts["task"] == "arithmetic":
        return tiny.build_tiny_model(out_dir, dataclasses.replace(settings, data_seed=synthetic_cfg.seed), progress)
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    # one thread, always: the warm start is deterministic for a fixed thread count only, so a toy's model (and the
    # numbers docs/toys.md and docs/results.md give for it) is the same on every machine; on a shared 2-core CPU
    # one thread is also the fastest (two threads waiting on each other: 119 steps in 330 CPU-s against 192 in 45)
    threads = 1
    torch.set_num_threads(threads)
    try:
        inputs = toy_inputs(synthetic_cfg, settings)
        examples = inputs.examples
        tokenizer = toy_tokenizer(synthetic_cfg, inputs.corpus, settings)
        t_tok = time.time()
        torch.manual_seed(settings.seed)
        model = tiny._new_model(tokenizer, settings)
        with tiny._Progress(progress) as bar:
            sft = tiny._sft(model, tokenizer, examples, settings, bar)
        t_sft = time.time()
        model.eval()
        torch.manual_seed(settings.seed)
        metrics = measure_toy(model, tokenizer, synthetic_cfg, inputs.measured, settings)
        t_eval = time.time()
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        completion_tokens = [len(ids) for ids in tokenizer([c for _, c in examples[:2000]])["input_ids"]]
        info = {
            "name": out_dir.name,
            "task": ts,
            **tiny.build_timing(t0, t_tok, t_sft, t_eval),
            "threads": threads,
            "versions": tiny._versions(),
            "settings": dataclasses.asdict(settings),
            "tokenizer": {"vocab_size": len(tokenizer), "max_completion_tokens": max(completion_tokens)},
            "model": {
                "architecture": "Qwen2ForCausalLM",
                "layers": settings.num_hidden_layers,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "sft": sft,
            "preconditions": metrics,
        }
        (out_dir / tiny.BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
        return info
    finally:
        torch.set_num_threads(threads_before)


def _with_train_size(synthetic_cfg: Any, n: int) -> Any:
    """A SyntheticConfig copy of `synthetic_cfg` (a dataclass or an omegaconf node) with `n` train problems
    (the first `n` of any larger train split: the loaders draw problems in order)."""
    values = {f.name: getattr(synthetic_cfg, f.name) for f in dataclasses.fields(SyntheticConfig)}
    return dataclasses.replace(SyntheticConfig(**values), train_size=n)


# training prompts the build measures on (rule_tags: 3 per tag of conf/data/rule_tags.yaml's 150 tags)
_MEASURE_PROMPTS = {"rule_tags": 450, "meds_strategies": 400}


# ---------------------------------------------------------------------------------------------------
# preconditions


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _quantiles(xs: Sequence[float]) -> dict[str, float] | None:
    if not xs:
        return None
    s = sorted(xs)
    return {f"p{q}": round(s[min(len(s) - 1, int(q / 100 * len(s)))], 4) for q in (10, 25, 50, 75, 90)}


def measure_toy(model: Any, tokenizer: Any, synthetic_cfg: Any, problems: Sequence[Any], settings: Any) -> dict:
    """Sample `settings.eval_samples` completions per problem at `settings.eval_temperature` and measure the
    task's preconditions (docs/toys.md): behaviour shares, correctness, all-wrong groups, duplicates."""
    prompts = [format_prompt(p, style="plain") for p in problems]
    groups = tiny.generate_completions(
        model,
        tokenizer,
        prompts,
        n=settings.eval_samples,
        temperature=settings.eval_temperature,
        max_new_tokens=settings.max_new_tokens,
        batch_size=256,
    )
    ok = [[tiny._is_correct(t, p.answer) for t in g] for g, p in zip(groups, problems)]
    labels = [[behaviour_of(synthetic_cfg, p, t) for t in g] for g, p in zip(groups, problems)]
    flat_ok = [c for row in ok for c in row]
    out: dict[str, Any] = {
        "split": "train",
        "n_problems": len(problems),
        "group_size": settings.eval_samples,
        "temperature": settings.eval_temperature,
        "sample_accuracy": _mean(flat_ok),
        "all_wrong_group_fraction": _mean([not any(row) for row in ok]),
        "all_right_group_fraction": _mean([all(row) for row in ok]),
        "mixed_group_fraction": _mean([0 < sum(row) < len(row) for row in ok]),
        "unlabelled_share": _mean([lab is None for row in labels for lab in row]),
        # a rollout with an identical twin in its group (what clustering within a visit finds)
        "duplicate_rollout_share": _mean([g.count(t) > 1 for g in groups for t in g]),
        "examples": [groups[i][:3] for i in range(min(3, len(groups)))],
    }
    if synthetic_cfg.task == "meds_strategies":
        doms = [DOMINANT[p.metadata["family"]] for p in problems]
        out["named_vs_answer_agreement"] = _mean(
            [named_strategy(t) == lab for g, row in zip(groups, labels) for t, lab in zip(g, row) if lab is not None]
        )
        out["strategy_share"] = {s: _mean([lab == s for row in labels for lab in row]) for s in STRATEGIES}
        named = [[named_strategy(t) for t in g] for g in groups]
        # the strategy a rollout chooses (its opener) apart from how well it then computes (its answer)
        out["named_strategy_share"] = {s: _mean([n == s for row in named for n in row]) for s in STRATEGIES}
        out["dominant_named_share"] = _mean([n == d for row, d in zip(named, doms) for n in row])
        out["careful_named_accuracy"] = _mean(
            [c for row, okr in zip(named, ok) for n, c in zip(row, okr) if n == RIGHT_STRATEGY]
        )
        out["dominant_wrong_share"] = _mean([lab == d for row, d in zip(labels, doms) for lab in row])
        out["dominant_share_of_wrong"] = _mean(
            [lab == d for row, okr, d in zip(labels, ok, doms) for lab, c in zip(row, okr) if not c]
        )
        # per group: the share of its most frequent wrong strategy among its wrong rollouts
        out["per_family"] = {
            fam: {
                "dominant": DOMINANT[fam],
                "dominant_share": _mean(
                    [
                        lab == DOMINANT[fam]
                        for p, row in zip(problems, labels)
                        if p.metadata["family"] == fam
                        for lab in row
                    ]
                ),
                "right_share": _mean([c for p, okr in zip(problems, ok) if p.metadata["family"] == fam for c in okr]),
                "all_wrong_group_fraction": _mean(
                    [not any(okr) for p, okr in zip(problems, ok) if p.metadata["family"] == fam]
                ),
            }
            for fam in sorted({p.metadata["family"] for p in problems})
        }
    if synthetic_cfg.task == "rule_tags":
        by_tag: dict[str, list[str | None]] = {}
        named_by_tag: dict[str, list[str | None]] = {}
        for p, row, g in zip(problems, labels, groups):
            by_tag.setdefault(p.metadata["tag"], []).extend(row)
            named_by_tag.setdefault(p.metadata["tag"], []).extend(named_rule(t) for t in g)
        # the rule a rollout chooses (the name it writes) apart from how well it then applies it (its answer)
        named_right, named_margin = [], []
        for tag, names in named_by_tag.items():
            rules = tag_rules(synthetic_cfg, tag)
            named_right.append(names.count(rules[0]) / len(names))
            named_margin.append(named_right[-1] - max(names.count(r) / len(names) for r in rules[1:]))
        right, wrong, wrong_max, margin, plural_right, plural_wrong = [], [], [], [], [], []
        for tag, labs in by_tag.items():
            rules = tag_rules(synthetic_cfg, tag)
            shares = {r: labs.count(r) / len(labs) for r in rules}
            right.append(shares[rules[0]])
            wrong.extend(shares[r] for r in rules[1:])
            wrong_max.append(max(shares[r] for r in rules[1:]))
            margin.append(shares[rules[0]] - wrong_max[-1])
            intended = rule_shares(synthetic_cfg, tag)
            (plural_wrong if max(intended, key=intended.get) != rules[0] else plural_right).append(
                shares[rules[0]] > max(shares[r] for r in rules[1:])
            )
        named = [named_rule(t) == lab for g, row in zip(groups, labels) for t, lab in zip(g, row) if lab is not None]
        # consensus: the majority answer of a group is right
        majority = []
        for g, p in zip(groups, problems):
            answers = Counter(tiny._answer_int(t) for t in g if tiny._answer_int(t) is not None)
            majority.append(bool(answers) and answers.most_common(1)[0][0] == int(p.answer))
        out.update(
            {
                "tags": len(by_tag),
                "samples_per_tag": _mean([len(v) for v in by_tag.values()]),
                "right_rule_share": {"mean": _mean(right), **(_quantiles(right) or {})},
                "wrong_rule_share": {"mean": _mean(wrong), **(_quantiles(wrong) or {})},
                "max_wrong_rule_share": {"mean": _mean(wrong_max), **(_quantiles(wrong_max) or {})},
                # consensus informativeness per tag: right rule's share minus the best wrong rule's share
                "consensus_margin": {"mean": _mean(margin), **(_quantiles(margin) or {})},
                # among tags whose warm start makes the right rule the plurality: how often sampling agrees
                "right_is_plurality": _mean(plural_right),
                # control tags (a wrong rule the warm start's plurality): how often sampling still favours right
                "right_is_plurality_on_control_tags": _mean(plural_wrong),
                "named_vs_answer_agreement": _mean(named),
                "named_right_rule_share": _mean(named_right),
                "named_consensus_margin": _mean(named_margin),
                "majority_answer_correct": _mean(majority),
            }
        )
    return out
