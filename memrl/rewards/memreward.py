"""MemReward's online reward: the GNN's predicted correctness for rollouts of unlabelled queries.

Labelled queries keep their ground-truth reward (`GroundTruthReward` runs first in the pipeline); this
component judges the other groups from the frozen memory graph and reward model (METHODS.md A2.5):

- `hard` (the paper): outcome = score = 1[p > threshold];
- `soft`: score = p, outcome = 1[p > threshold] (dynamic sampling filters on the binary outcome);
- `abstain_band=[lo, hi]`: a group with any p in [lo, hi] stays unjudged, so it is not trained on.

It never reads a label: groups arrive without answers and it does not call `ctx.labels`.
"""

from __future__ import annotations

import time
from typing import Any

from memrl.memreward.embed import TextGroup
from memrl.memreward.predictor import RewardPredictor
from memrl.rewards.base import Group, RewardComponent, RewardContext
from memrl.rollout.split import split_thinking_answer

REWARD_MODES = ("hard", "soft")


class MemRewardReward(RewardComponent):
    """GNN-predicted rewards for unlabelled groups.

    Args:
        predictor: the frozen memory graph and reward model.
        mode: "hard" or "soft" (see the module docstring).
        threshold: P(correct) above which a rollout counts as right.
        abstain_band: (lo, hi) or None.
    """

    name = "memreward"
    # the trainer draws unlabelled queries too when a component judges them
    trains_on_unlabelled = True

    def __init__(
        self,
        predictor: RewardPredictor,
        mode: str = "hard",
        threshold: float = 0.5,
        abstain_band: tuple[float, float] | None = None,
    ) -> None:
        if mode not in REWARD_MODES:
            raise ValueError(f"unknown MemReward reward mode {mode!r}; valid: {', '.join(REWARD_MODES)}")
        self.predictor = predictor
        self.mode = mode
        self.threshold = float(threshold)
        self.abstain_band = None if abstain_band is None else (float(abstain_band[0]), float(abstain_band[1]))
        self.last_seconds = 0.0

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        todo = [g for g in groups if not g.labelled]
        if not todo:
            return
        t0 = time.time()
        text_groups = []
        for g in todo:
            parts = [split_thinking_answer(r.text) for r in g.rollouts]
            text_groups.append(
                TextGroup(g.problem.question, g.problem.domain, [p[0] for p in parts], [p[1] for p in parts])
            )
        probs = self.predictor.predict(text_groups)
        for g, ps in zip(todo, probs):
            g.extra["gnn_prob"] = ps
            if self.abstain_band is not None and any(self.abstain_band[0] <= p <= self.abstain_band[1] for p in ps):
                g.extra["gnn_abstained"] = [True] * len(ps)
                continue
            for i, p in enumerate(ps):
                right = float(p > self.threshold)
                g.outcome[i] = right
                g.score[i] += right if self.mode == "hard" else p
        self.last_seconds += time.time() - t0

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        judged = [g for g in groups if "gnn_prob" in g.extra]
        if not judged:
            return {}
        probs = [p for g in judged for p in g.extra["gnn_prob"]]
        out = {
            "reward/gnn_groups": float(len(judged)),
            "reward/gnn_prob_mean": sum(probs) / len(probs),
            "reward/gnn_pred_right_frac": sum(p > self.threshold for p in probs) / len(probs),
            "timing_s/gnn_reward": self.last_seconds,
        }
        if self.abstain_band is not None:
            out["reward/gnn_abstained_frac"] = sum("gnn_abstained" in g.extra for g in judged) / len(judged)
        self.last_seconds = 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"predictor": self.predictor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.predictor.load_state_dict(state["predictor"])
