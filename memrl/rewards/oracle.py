"""Ground-truth reward and DAPO's overlong penalty."""

from __future__ import annotations

from memrl.grading import GradeItem
from memrl.rewards.base import Group, RewardComponent, RewardContext
from memrl.rl.core_algos import overlong_penalty


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
