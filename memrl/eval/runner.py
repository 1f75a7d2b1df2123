"""Evaluate a policy on problems: greedy accuracy, sampled pass@k and mean@n, per-sample records.

Used by `memrl eval` and (later) by the trainer's periodic evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from memrl.data.problem import Problem
from memrl.data.templates import format_prompt
from memrl.eval.passk import mean_at_n, mean_pass_at_k
from memrl.grading import GradeItem, Grader
from memrl.rollout.records import Rollout, SamplingParams


@dataclass(frozen=True)
class EvalSettings:
    """What one evaluation does (built from the `eval`, `rollout`, `model` and `data` config groups)."""

    greedy: bool = True
    n: int = 8
    ks: tuple[int, ...] = (1, 2, 4, 8)
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    prompt_style: str = "plain"
    answer_format: str = "boxed"
    system_prompt: str | None = None
    seed: int = 0


def evaluate_problems(
    engine: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    settings: EvalSettings,
    grader: Grader,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate, grade and score one benchmark.

    Returns:
        (metrics, samples): metrics has n_problems, greedy_acc, mean@n, pass@k {k: value}, distinct@n
        (distinct answers per problem among its n samples), mean_tokens and truncated (fraction of
        completions that hit the length limit); samples has one record per completion.
    """
    prompts = [
        format_prompt(p, tokenizer, settings.prompt_style, settings.answer_format, settings.system_prompt)
        for p in problems
    ]
    metrics: dict[str, Any] = {"n_problems": len(problems)}
    samples: list[dict[str, Any]] = []
    lengths: list[int] = []
    truncated = 0

    def grade(groups: list[list[Rollout]], mode: str) -> list[int]:
        nonlocal truncated
        items = [GradeItem(p.domain, r.text, p.answer, p.metadata) for p, g in zip(problems, groups) for r in g]
        results = iter(grader.grade_batch(items))
        counts = []
        for p, g in zip(problems, groups):
            c = 0
            for r in g:
                res = next(results)
                c += int(res.correct)
                lengths.append(r.num_tokens)
                truncated += r.finish_reason == "length"
                samples.append(
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
            counts.append(c)
        return counts

    if settings.greedy:
        params = SamplingParams(n=1, temperature=0.0, max_new_tokens=settings.max_new_tokens, stop=settings.stop)
        counts = grade(engine.generate(prompts, params, progress), "greedy")
        metrics["greedy_acc"] = sum(counts) / len(counts) if counts else float("nan")
    if settings.n > 0:
        params = SamplingParams(
            n=settings.n,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_new_tokens,
            stop=settings.stop,
            seed=settings.seed,
        )
        first = len(samples)
        counts = grade(engine.generate(prompts, params, progress), "sample")
        metrics["n"] = settings.n
        # answer diversity: distinct extracted answers among a problem's n samples (no answer counts as one)
        per_problem: dict[str, set[str | None]] = {}
        for rec in samples[first:]:
            per_problem.setdefault(rec["id"], set()).add(rec["extracted"])
        metrics[f"distinct@{settings.n}"] = (
            sum(len(v) for v in per_problem.values()) / len(per_problem) if per_problem else float("nan")
        )
        metrics[f"mean@{settings.n}"] = mean_at_n(counts, settings.n)
        metrics["pass@k"] = mean_pass_at_k(counts, settings.n, settings.ks)
        metrics["correct_counts"] = counts
    metrics["mean_tokens"] = sum(lengths) / len(lengths) if lengths else 0.0
    metrics["truncated"] = truncated / len(lengths) if lengths else 0.0
    return metrics, samples


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
