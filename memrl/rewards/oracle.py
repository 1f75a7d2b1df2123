"""Ground-truth reward (rewards `oracle` and `partial`) and DAPO's overlong penalty (shaper `overlong`)."""

from __future__ import annotations

from typing import Any

from memrl.errors import UserError
from memrl.grading import GradeItem
from memrl.rewards.base import Group, RewardComponent, RewardContext
from memrl.rewards.registry import BuildContext, RewardSpec


class GroundTruthReward(RewardComponent):
    """Binary reward from the gold answer, on labelled queries only; unlabelled groups stay unjudged.

    `reward=oracle` labels every query; `reward=partial` (the MemReward paper's R1-p) labels a fraction and
    trains only on those queries.
    """

    name = "ground_truth"

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        todo = [g for g in groups if g.labelled]
        items = [
            GradeItem(
                g.problem.domain,
                r.text,
                ctx.labels.labelled_answer(g.problem.id),
                ctx.labels.labelled_metadata(g.problem.id),
            )
            for g in todo
            for r in g.rollouts
        ]
        results = iter(ctx.grader.grade_batch(items))
        for g in todo:
            for i in range(len(g.rollouts)):
                ok = float(next(results).correct)
                g.outcome[i] = ok
                g.score[i] += ok

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        judged = [o for g in groups if g.labelled for o in g.outcome if o is not None]
        return {"reward/gt_acc": sum(judged) / len(judged)} if judged else {}


def overlong_penalty(response_length: int, max_response_length: int, buffer_length: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment: 0 up to `max - buffer` tokens, then linear down to `-factor` at `max`.

    penalty = min(-(L - (max - buffer)) / buffer * factor, 0).
    """
    if buffer_length <= 0:
        return 0.0
    expected = max_response_length - buffer_length
    return min(-(response_length - expected) / buffer_length * factor, 0.0)


class OverlongPenalty(RewardComponent):
    """DAPO's soft overlong punishment added to the score: 0 up to `max - buffer` tokens, -factor at max."""

    name = "overlong"

    def __init__(self, buffer_length: int, penalty_factor: float = 1.0) -> None:
        self.buffer_length = int(buffer_length)
        self.penalty_factor = float(penalty_factor)

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        for g in groups:
            pens = [
                overlong_penalty(r.num_tokens, ctx.max_response_length, self.buffer_length, self.penalty_factor)
                for r in g.rollouts
            ]
            g.extra["overlong_penalty"] = pens
            g.score = [s + p for s, p in zip(g.score, pens)]

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        pens = [p for g in groups for p in g.extra.get("overlong_penalty", [])]
        if not pens:
            return {}
        return {
            "reward/overlong_penalty_mean": sum(pens) / len(pens),
            "reward/overlong_penalised_frac": sum(p < 0 for p in pens) / len(pens),
        }


def _check_overlong(cfg: Any) -> None:
    ob = cfg.reward.overlong_buffer
    if ob.enable and not 0 < int(ob.len) <= int(cfg.rollout.max_new_tokens):
        raise UserError(
            f"reward.overlong_buffer.len must be in 1..rollout.max_new_tokens ({cfg.rollout.max_new_tokens}), "
            f"got {ob.len}"
        )


def _build_overlong(cfg: Any, ctx: BuildContext) -> OverlongPenalty | None:
    ob = cfg.reward.overlong_buffer
    if not ob.enable:
        return None
    _check_overlong(cfg)
    return OverlongPenalty(int(ob.len), float(ob.penalty_factor))


def _build_ground_truth(cfg: Any, ctx: BuildContext) -> list[RewardComponent]:
    return [GroundTruthReward()]


# the registry's entries (memrl.rewards.registry); oracle and partial differ in the label split only (reward.label_ratio)
ORACLE = RewardSpec(_build_ground_truth)
PARTIAL = RewardSpec(_build_ground_truth)
OVERLONG = RewardSpec(_build_overlong, _check_overlong)
