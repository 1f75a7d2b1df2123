"""Ground-truth reward (rewards `oracle` and `partial`), DAPO's overlong penalty (shaper `overlong`), and the
diagnostic noisy oracle of MemReward's control arm (`OracleNoiseReward`, reward.memreward.reward_model=oracle_noise)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from memrl.errors import UserError
from memrl.grading import GradeItem
from memrl.rewards.base import Group, RewardComponent, RewardContext
from memrl.rewards.registry import BuildContext, RewardSpec


def grade_groups(
    groups: list[Group], ctx: RewardContext, answer: Callable[[str], Any], metadata: Callable[[str], dict]
) -> list[list[bool]]:
    """Per group, whether each rollout is right against `answer(query id)` and `metadata(query id)` (the label
    store's door the caller may use: `labelled_answer`, or the diagnostic oracle's `oracle_answer`)."""
    items = [
        GradeItem(g.problem.domain, r.text, answer(g.problem.id), metadata(g.problem.id))
        for g in groups
        for r in g.rollouts
    ]
    results = iter(ctx.grader.grade_batch(items))
    return [[bool(next(results).correct) for _ in g.rollouts] for g in groups]


class GroundTruthReward(RewardComponent):
    """Binary reward from the gold answer, on labelled queries only; unlabelled groups stay unjudged.

    `reward=oracle` labels every query; `reward=partial` (the MemReward paper's R1-p) labels a fraction and
    trains only on those queries.
    """

    name = "ground_truth"

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        todo = [g for g in groups if g.labelled]
        for g, truth in zip(todo, grade_groups(todo, ctx, ctx.labels.labelled_answer, ctx.labels.labelled_metadata)):
            for i, right in enumerate(truth):
                g.outcome[i] = float(right)
                g.score[i] += float(right)

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        judged = [o for g in groups if g.labelled for o in g.outcome if o is not None]
        return {"reward/gt_acc": sum(judged) / len(judged)} if judged else {}


def flip_draw(seed: int, problem_id: str, step: int, index: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, query id, step, rollout index in its group): the same rollout
    gets the same draw in any rerun or resume, whatever else the run did."""
    digest = hashlib.sha256(f"{int(seed)}\x00{problem_id}\x00{int(step)}\x00{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def noisy_outcome(correct: bool, draw: float, fpr: float, fnr: float) -> float:
    """The oracle's verdict: a right rollout is called wrong when draw < fnr, a wrong one right when draw < fpr."""
    return float(draw >= fnr) if correct else float(draw < fpr)


class OracleNoiseReward(RewardComponent):
    """DIAGNOSTIC control, not a method (reward.memreward.reward_model=oracle_noise): the ground truth of the
    unlabelled rollouts, flipped at a false-positive rate `fpr` and a false-negative rate `fnr`. It is the
    ceiling of any reward predictor of that quality: if MemReward with this oracle in the GNN's place does not
    beat R1-p, no GNN of that error rate can.

    Unlike every method's reward it reads the ground truth of unlabelled queries, through
    `GroundTruth.oracle_answer` (counted in `oracle_reads`, apart from the run's label reads). Its verdicts are
    written as `gnn_prob` (0 or 1) so the reward-model metrics (`reward/gnn_*`) compare with the GNN's.
    """

    name = "oracle_noise"
    # the trainer draws unlabelled queries too when a component judges them
    trains_on_unlabelled = True
    # the oracle arm: the one reward allowed to read unlabelled ground truth (tests exclude it by this flag)
    reads_unlabelled_ground_truth = True

    def __init__(self, fpr: float, fnr: float, seed: int) -> None:
        for key, rate in (("fpr", fpr), ("fnr", fnr)):
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"reward.memreward.oracle_noise.{key} must be in [0, 1], got {rate}")
        self.fpr, self.fnr, self.seed = float(fpr), float(fnr), int(seed)

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        todo = [g for g in groups if not g.labelled]
        for g, truth in zip(todo, grade_groups(todo, ctx, ctx.labels.oracle_answer, ctx.labels.oracle_metadata)):
            draws = [flip_draw(self.seed, g.problem.id, ctx.step, i) for i in range(len(g.rollouts))]
            verdicts = [noisy_outcome(t, d, self.fpr, self.fnr) for t, d in zip(truth, draws)]
            g.extra["gnn_prob"] = verdicts
            g.extra["oracle_noise_flipped"] = [v != float(t) for v, t in zip(verdicts, truth)]
            for i, v in enumerate(verdicts):
                g.outcome[i] = v
                g.score[i] += v

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        judged = [g for g in groups if "oracle_noise_flipped" in g.extra]
        if not judged:
            return {}
        verdicts = [v for g in judged for v in g.extra["gnn_prob"]]
        flips = [f for g in judged for f in g.extra["oracle_noise_flipped"]]
        return {
            "reward/gnn_groups": float(len(judged)),
            "reward/gnn_pred_right_frac": sum(verdicts) / len(verdicts),
            "reward/oracle_noise_flipped_frac": sum(flips) / len(flips),
        }


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
