"""Evaluate a policy on problems: greedy accuracy, sampled pass@k and mean@n, per-sample records.

Used by `memrl eval`, by `memrl train`'s periodic validation and final evaluation; `evaluate_problems` takes any
list of problems (a shard of a benchmark evaluates alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from memrl.data.problem import Problem
from memrl.data.templates import format_prompt
from memrl.dist.runtime import broadcast_object, gather_objects
from memrl.errors import UserError
from memrl.eval.passk import default_ks, mean_at_n, mean_pass_at_k, validate_ks
from memrl.grading import GradeItem, Grader
from memrl.rollout.records import Rollout, SamplingParams

# the pass@k curve of the trainer's periodic validation: powers of two up to trainer.val_n (at most 64)
VAL_KS = (1, 2, 4, 8, 16, 32, 64)

# the settings one evaluation records, in the order results files list them
FIELDS = (
    "greedy",
    "n",
    "ks",
    "temperature",
    "top_p",
    "max_new_tokens",
    "stop",
    "prompt_style",
    "answer_format",
    "system_prompt",
    "seed",
)


class EvalSettings:
    """What one evaluation does: a read-only view of the run's config, not a copy of it.

    Each attribute reads its setting where the schema defines it (memrl/config/schema.py, with its help text):
    `eval.greedy`, `eval.n`, `eval.ks`, `eval.temperature`, `eval.top_p`, `eval.max_new_tokens` (None:
    `rollout.max_new_tokens`), `rollout.stop`, `data.answer_format`, `model.system_prompt` and `seed`. Only
    what the config cannot hold is given here: the prompt style resolved against the tokenizer (`model.prompt_style`
    auto -> chat or plain). The trainer's periodic validation (`validation=True`) is greedy plus `trainer.val_n`
    samples with pass@k at the powers of two up to it (VAL_KS).

    Args:
        cfg: a typed `EvalAppConfig` / `TrainAppConfig` or the composed DictConfig of that schema.
        prompt_style: "chat" or "plain" (memrl.data.templates.resolve_style).
        validation: the trainer's periodic validation instead of `memrl eval` / the final evaluation.

    Raises:
        UserError: for `memrl eval` settings that ask for nothing (eval.greedy=false with eval.n=0), a negative
            eval.n, or an eval.ks outside 1..eval.n.
    """

    def __init__(self, cfg: Any, prompt_style: str, *, validation: bool = False) -> None:
        self._cfg = cfg
        self._validation = validation
        self.prompt_style = prompt_style
        if not validation:
            if self.n < 0:
                raise UserError(f"eval.n must be >= 0, got {self.n}")
            if not self.greedy and self.n == 0:
                raise UserError("nothing to evaluate: eval.greedy=false and eval.n=0")
            _ = self.ks  # an eval.ks outside 1..n fails here, before any generation

    @property
    def greedy(self) -> bool:
        return True if self._validation else bool(self._cfg.eval.greedy)

    @property
    def n(self) -> int:
        return int(self._cfg.trainer.val_n if self._validation else self._cfg.eval.n)

    @property
    def ks(self) -> tuple[int, ...]:
        n = self.n
        if self._validation:
            return tuple(k for k in VAL_KS if k <= n)
        ks = self._cfg.eval.ks
        return tuple(validate_ks(ks, n) if (ks and n > 0) else default_ks(n))

    @property
    def temperature(self) -> float:
        return float(self._cfg.eval.temperature)

    @property
    def top_p(self) -> float:
        return float(self._cfg.eval.top_p)

    @property
    def max_new_tokens(self) -> int:
        return int(self._cfg.eval.max_new_tokens or self._cfg.rollout.max_new_tokens)

    @property
    def stop(self) -> tuple[str, ...]:
        return tuple(self._cfg.rollout.stop)

    @property
    def answer_format(self) -> str:
        fmt = self._cfg.data.answer_format
        return str(getattr(fmt, "value", fmt))

    @property
    def system_prompt(self) -> str | None:
        return self._cfg.model.system_prompt

    @property
    def seed(self) -> int:
        return int(self._cfg.seed)

    def as_dict(self) -> dict[str, Any]:
        """The settings as resolved for this evaluation (the `settings` of eval/results_<ts>.json)."""
        return {name: getattr(self, name) for name in FIELDS}


def evaluate_problems(
    engine: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    settings: EvalSettings,
    grader: Grader,
    progress: Callable[[int], None] | None = None,
    dist_ctx: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate, grade and score one benchmark.

    Args:
        dist_ctx: the process group (memrl.dist.runtime.DistContext) of a distributed run, None in one process.
            With W > 1 ranks, each rank generates and grades whole engine batches of the problems (batches r,
            r + W, r + 2W, ...; `split_batches`), rank 0 gathers the graded samples and computes the metrics,
            and every rank gets them: the numbers and samples of a 1-rank evaluation.

    Returns:
        (metrics, samples): metrics has n_problems, greedy_acc, mean@n, pass@k {k: value}, distinct@n
        (distinct answers per problem among its n samples), mean_tokens and truncated (fraction of
        completions that hit the length limit); samples has one record per completion (distributed: on rank
        0, empty on the other ranks).
    """
    prompts = [
        format_prompt(p, tokenizer, settings.prompt_style, settings.answer_format, settings.system_prompt)
        for p in problems
    ]
    world = dist_ctx.world_size if dist_ctx is not None else 1
    rank = dist_ctx.rank if dist_ctx is not None else 0

    def graded(params: SamplingParams, mode: str) -> list[list[dict[str, Any]]]:
        """Each problem's sample records in problem order (on rank 0; empty on the other ranks)."""
        if world == 1:
            return _grade(problems, range(len(problems)), engine.generate(prompts, params, progress), mode, grader)
        mine = split_batches(engine, prompts, params, rank, world, progress)
        parts = gather_objects(list(zip(mine, _grade(problems, list(mine), list(mine.values()), mode, grader))))
        if parts is None:
            return []
        done = dict(x for part in parts for x in part)
        return [done[i] for i in range(len(problems))]

    passes: list[tuple[str, SamplingParams]] = []
    if settings.greedy:
        passes.append(
            ("greedy", SamplingParams(n=1, temperature=0.0, max_new_tokens=settings.max_new_tokens, stop=settings.stop))
        )
    if settings.n > 0:
        params = SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            stop=settings.stop,
            seed=settings.seed,
        )
        passes.append(("sample", params))
    records = {mode: graded(params, mode) for mode, params in passes}
    if rank != 0:  # rank 0's metrics (computed below from every rank's samples), and no samples
        return broadcast_object(None), []

    metrics: dict[str, Any] = {"n_problems": len(problems)}
    samples = [rec for by_problem in records.values() for recs in by_problem for rec in recs]
    if "greedy" in records:
        counts = [sum(int(r["correct"]) for r in recs) for recs in records["greedy"]]
        metrics["greedy_acc"] = sum(counts) / len(counts) if counts else float("nan")
    if "sample" in records:
        counts = [sum(int(r["correct"]) for r in recs) for recs in records["sample"]]
        metrics["n"] = settings.n
        # answer diversity: distinct extracted answers among a problem's n samples (no answer counts as one)
        per_problem: dict[str, set[str | None]] = {}
        for recs in records["sample"]:
            for rec in recs:
                per_problem.setdefault(rec["id"], set()).add(rec["extracted"])
        metrics[f"distinct@{settings.n}"] = (
            sum(len(v) for v in per_problem.values()) / len(per_problem) if per_problem else float("nan")
        )
        metrics[f"mean@{settings.n}"] = mean_at_n(counts, settings.n)
        metrics["pass@k"] = mean_pass_at_k(counts, settings.n, settings.ks)
        metrics["correct_counts"] = counts
    lengths = [rec["num_tokens"] for rec in samples]
    metrics["mean_tokens"] = sum(lengths) / len(lengths) if lengths else 0.0
    metrics["truncated"] = sum(rec["finish_reason"] == "length" for rec in samples) / len(lengths) if lengths else 0.0
    if world > 1:
        broadcast_object(metrics)
    return metrics, samples


def split_batches(
    engine: Any,
    prompts: Sequence[str],
    params: SamplingParams,
    rank: int,
    world: int,
    progress: Callable[[int], None] | None = None,
) -> dict[int, list[Rollout]]:
    """This rank's share of `engine.generate(prompts, params)`: {prompt index: its rollouts}.

    The prompts fall into the engine's batches (`engine.batch_size`); rank r generates batches r, r + W, r + 2W,
    ..., each with `params.from_prompt(first prompt)`, so that it samples exactly what one call on all prompts
    samples for them (memrl.rollout.hf_engine). Every rank makes the same number of calls, as sharded forward
    passes need: a rank short of batches generates batch 0 once more and drops it (the engine's `synced_gpus`
    keeps the ranks' forward passes in step inside a call). `progress` gets each round's problems, all ranks'.
    """
    size = max(1, int(getattr(engine, "batch_size", len(prompts)) or 1))
    starts = list(range(0, len(prompts), size))
    mine = starts[rank::world]
    out: dict[int, list[Rollout]] = {}
    for r in range(-(-len(starts) // world)):
        first = mine[r] if r < len(mine) else 0
        groups = engine.generate(list(prompts[first : first + size]), params.from_prompt(first))
        if r < len(mine):
            out.update((first + i, g) for i, g in enumerate(groups))
        if progress is not None:
            progress(min(len(prompts), (r + 1) * world * size) - r * world * size)
    return out


def _grade(
    problems: Sequence[Problem], indices: Sequence[int], groups: list[list[Rollout]], mode: str, grader: Grader
) -> list[list[dict[str, Any]]]:
    """The sample records of problems[i]'s rollouts for each i of `indices` (graded in one batch)."""
    chosen = [problems[i] for i in indices]
    items = [GradeItem(p.domain, r.text, p.answer, p.metadata) for p, g in zip(chosen, groups) for r in g]
    results = iter(grader.grade_batch(items))
    out = []
    for p, g in zip(chosen, groups):
        recs = []
        for r in g:
            res = next(results)
            recs.append(
                {
                    "id": p.id,
                    "mode": mode,
                    "sample_index": r.sample_index,
                    "gold": p.answer,
                    "completion": r.text,
                    "extracted": res.extracted,
                    "correct": res.correct,
                    "grade_status": res.status,
                    "finish_reason": r.finish_reason,
                    "num_tokens": r.num_tokens,
                    "prompt": r.prompt,
                }
            )
        out.append(recs)
    return out


def weighted_average(per_bench: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sample-weighted averages across benchmarks (each benchmark weighs by its number of problems)."""
    total = sum(m["n_problems"] for m in per_bench.values())
    out: dict[str, Any] = {"n_problems": total}
    if total == 0:
        return out

    def avg(get: Callable[[dict[str, Any]], float | None]) -> float | None:
        pairs = [(get(m), m["n_problems"]) for m in per_bench.values()]
        if any(v is None for v, _ in pairs):
            return None
        return sum(v * w for v, w in pairs) / total

    out["greedy_acc"] = avg(lambda m: m.get("greedy_acc"))
    ns = {m.get("n") for m in per_bench.values()}
    if len(ns) == 1 and None not in ns:
        n = ns.pop()
        out["n"] = n
        out[f"mean@{n}"] = avg(lambda m: m.get(f"mean@{n}"))
        out[f"distinct@{n}"] = avg(lambda m: m.get(f"distinct@{n}"))
        ks = sorted(set.intersection(*(set(m["pass@k"]) for m in per_bench.values())))
        out["pass@k"] = {k: avg(lambda m, k=k: m["pass@k"][k]) for k in ks}
    return {k: v for k, v in out.items() if v is not None}
