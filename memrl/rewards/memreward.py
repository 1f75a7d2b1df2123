"""MemReward's online reward (reward `memreward`): the GNN's predicted correctness for rollouts of unlabelled
queries. The warm-up that builds the GNN is `memrl.stages.warmup`; the memory, graph and GNN themselves are
`memrl.memreward.*`.

Labelled queries keep their ground-truth reward (`GroundTruthReward` runs first in the pipeline); this
component judges the other groups from the frozen memory graph and reward model (docs/methods.md#online-reward):

- `hard` (the paper): outcome = score = 1[p > threshold];
- `soft`: score = p, outcome = 1[p > threshold] (dynamic sampling filters on the binary outcome);
- `abstain_band=[lo, hi]`: a group with any p in [lo, hi] stays unjudged, so it is not trained on.

With `growth` (beyond the paper, off by default), the labelled groups of every step join the memory with
the outcomes `GroundTruthReward` gave them, and every `refresh_every` steps the model is fine-tuned on the
grown memory (`RewardPredictor.refresh`).

It never reads a label: groups arrive without answers and it does not call `ctx.labels`. The one exception is
the DIAGNOSTIC control `reward_model=oracle_noise` (`memrl.rewards.oracle.OracleNoiseReward`), which replaces
the GNN by the ground truth flipped at configured rates and reads it through `GroundTruth.oracle_answer`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from memrl.config.schema import MemRewardConfig
from memrl.errors import UserError
from memrl.memreward.artifacts import fit_settings, gnn_dir, load_graph_inputs, make_model
from memrl.memreward.embed import TextGroup
from memrl.memreward.gnn import MODEL_KINDS
from memrl.memreward.graph import DIRECTIONS
from memrl.memreward.predictor import RewardPredictor
from memrl.memreward.training import SELECT_BY
from memrl.rewards.base import Group, RewardComponent, RewardContext
from memrl.rewards.oracle import GroundTruthReward, OracleNoiseReward
from memrl.rewards.registry import BuildContext, RewardSpec
from memrl.rollout.split import split_thinking_answer

log = logging.getLogger(__name__)

REWARD_MODES = ("hard", "soft")
# the diagnostic control in the reward model's place (`memrl.rewards.oracle.OracleNoiseReward`): no warm-up, no GNN
ORACLE_NOISE = "oracle_noise"
REWARD_MODELS = (*MODEL_KINDS, ORACLE_NOISE)


@dataclass
class MemoryGrowth:
    """Online growth of the memory: fine-tune every `refresh_every` steps, validating on `val`.

    Attributes:
        val: the GNN's validation queries as graph inputs (unlabelled nodes).
        val_labels: [R_val] their rollouts' labels (already counted by the warm-up).
        settings: `training.FitSettings` of the refreshes.
    """

    refresh_every: int
    val: Any
    val_labels: torch.Tensor
    settings: Any


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
        # the defaults are the schema's (memrl.config.schema.MemRewardConfig), the one place they are written
        mode: str = MemRewardConfig.reward_mode,
        threshold: float = MemRewardConfig.threshold,
        abstain_band: tuple[float, float] | None = None,
        growth: MemoryGrowth | None = None,
    ) -> None:
        if mode not in REWARD_MODES:
            raise ValueError(f"unknown MemReward reward mode {mode!r}; valid: {', '.join(REWARD_MODES)}")
        self.predictor = predictor
        self.mode = mode
        self.threshold = float(threshold)
        self.abstain_band = None if abstain_band is None else (float(abstain_band[0]), float(abstain_band[1]))
        self.growth = growth
        self.grown_rollouts = 0
        self.last_refresh_step = 0
        self.refreshes: list[dict[str, Any]] = []
        self.refresh_seconds = 0.0

    def score(self, groups: list[Group], ctx: RewardContext) -> None:
        if self.growth is not None:
            self._grow(groups, ctx)
        todo = [g for g in groups if not g.labelled]
        if not todo:
            return
        probs = self.predictor.predict([_text_group(g) for g in todo])
        for g, ps in zip(todo, probs):
            g.extra["gnn_prob"] = ps
            if self.abstain_band is not None and any(self.abstain_band[0] <= p <= self.abstain_band[1] for p in ps):
                g.extra["gnn_abstained"] = [True] * len(ps)
                continue
            for i, p in enumerate(ps):
                right = float(p > self.threshold)
                g.outcome[i] = right
                g.score[i] += right if self.mode == "hard" else p

    def _grow(self, groups: list[Group], ctx: RewardContext) -> None:
        """Refresh the model when a refresh is due (before this step's predictions), then add this batch's
        labelled groups, judged by the ground-truth reward that ran before this component."""
        g = self.growth
        if ctx.step > self.last_refresh_step and ctx.step % g.refresh_every == 0 and self.grown_rollouts:
            t0 = time.time()
            out = self.predictor.refresh(g.val, g.val_labels, g.settings)
            self.refreshes.append({"step": ctx.step, "seconds": round(time.time() - t0, 2), **out})
            self.refresh_seconds += time.time() - t0
            self.last_refresh_step = ctx.step
        labelled = [x for x in groups if x.labelled and x.judged]
        added = [_text_group(x, labels=[o > 0.5 for o in x.outcome]) for x in labelled]
        self.grown_rollouts += self.predictor.grow(added)

    def metrics(self, groups: list[Group]) -> dict[str, float]:
        """Per step: what the GNN predicted, and where its time went (the timers restart here)."""
        out: dict[str, float] = {}
        if self.growth is not None:
            out["reward/gnn_memory_rollouts"] = float(self.predictor.memory.num_rollouts)
            out["reward/gnn_refreshes"] = float(len(self.refreshes))
            out["timing_s/gnn_refresh"] = self.refresh_seconds
            self.refresh_seconds = 0.0
        judged = [g for g in groups if "gnn_prob" in g.extra]
        if not judged:
            return out
        probs = [p for g in judged for p in g.extra["gnn_prob"]]
        out.update(
            {
                "reward/gnn_groups": float(len(judged)),
                "reward/gnn_prob_mean": sum(probs) / len(probs),
                "reward/gnn_pred_right_frac": sum(p > self.threshold for p in probs) / len(probs),
                "timing_s/gnn_reward": sum(self.predictor.seconds.values()),
                **{f"timing_s/gnn_{k}": v for k, v in self.predictor.seconds.items()},
            }
        )
        self.predictor.seconds = dict.fromkeys(self.predictor.seconds, 0.0)
        if self.abstain_band is not None:
            out["reward/gnn_abstained_frac"] = sum("gnn_abstained" in g.extra for g in judged) / len(judged)
        return out

    def state_dict(self) -> dict[str, Any]:
        growth = {"grown_rollouts": self.grown_rollouts, "last_refresh_step": self.last_refresh_step}
        return {"predictor": self.predictor.state_dict(), "growth": growth | {"refreshes": list(self.refreshes)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.predictor.load_state_dict(state["predictor"])
        growth = state.get("growth", {})
        self.grown_rollouts = int(growth.get("grown_rollouts", 0))
        self.last_refresh_step = int(growth.get("last_refresh_step", 0))
        self.refreshes = list(growth.get("refreshes", []))


def _text_group(group: Group, labels: list[bool] | None = None) -> TextGroup:
    """A group's query and rollouts as text, split into thinking and answer as in the warm-up memory."""
    parts = [split_thinking_answer(r.text) for r in group.rollouts]
    return TextGroup(group.problem.question, group.problem.domain, [p[0] for p in parts], [p[1] for p in parts], labels)


def check_memreward_config(cfg: Any) -> None:
    """Fail early, with the key's name, on reward.memreward values the stages would only reject later."""
    mr = cfg.reward.memreward
    for key, value, valid in [
        ("direction", mr.direction, DIRECTIONS),
        ("reward_mode", mr.reward_mode, REWARD_MODES),
        ("gnn.select_by", mr.gnn.select_by, SELECT_BY),
        ("reward_model", mr.reward_model, REWARD_MODELS),
    ]:
        if str(value) not in valid:
            raise UserError(f"unknown reward.memreward.{key}={value}; valid: {', '.join(valid)}")
    if int(mr.refresh_epochs) < 1:
        raise UserError(f"reward.memreward.refresh_epochs must be >= 1, got {mr.refresh_epochs}")
    if int(mr.refresh_every) < 1:
        raise UserError(f"reward.memreward.refresh_every must be >= 1, got {mr.refresh_every}")
    if int(mr.k) < 1:
        raise UserError(f"reward.memreward.k must be >= 1, got {mr.k}")
    for key in ("fpr", "fnr"):
        rate = float(mr.oracle_noise[key])
        if not 0.0 <= rate <= 1.0:
            raise UserError(f"reward.memreward.oracle_noise.{key} must be in [0, 1], got {rate}")
    if mr.abstain_band is not None:
        lo, hi = (float(x) for x in mr.abstain_band)
        if not 0.0 <= lo < hi <= 1.0:
            raise UserError(
                f"reward.memreward.abstain_band must be [low, high] with 0 <= low < high <= 1, got {list(mr.abstain_band)}"
            )


def memreward_component(cfg: Any, run_dir: Any, encoder: Any) -> MemRewardReward:
    """The online component from a run directory whose warm-up is done (memory/, graph/, gnn/).

    Args:
        encoder: the warm-up's sentence encoder (its embedding cache carries over).
    """
    inputs, labels = load_graph_inputs(run_dir)
    mr = cfg.reward.memreward
    kind = str(mr.reward_model)
    path = gnn_dir(run_dir) / f"{kind}.pt"
    if not path.is_file():
        raise UserError(
            f"reward.memreward.reward_model={kind}, but {path} is missing: this run's `memrl gnn` did not train it; "
            "rerun it with reward.memreward.baselines=true (or in a new run directory)"
        )
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = make_model(saved["spec"])
    model.load_state_dict(saved["state_dict"])
    predictor = RewardPredictor(
        model, saved["spec"], inputs["train"], encoder, int(mr.k), str(mr.direction), int(mr.think_k)
    )
    band = None if mr.abstain_band is None else tuple(float(x) for x in mr.abstain_band)
    growth = None
    if mr.grow_memory:
        # a refresh starts from trained weights: a short fine-tune, no epoch floor, one run
        refresh = fit_settings(cfg, max_epochs=int(mr.refresh_epochs), min_epochs=0, restarts=1)
        growth = MemoryGrowth(int(mr.refresh_every), inputs["val"], labels["val"], refresh)
    return MemRewardReward(predictor, str(mr.reward_mode), float(mr.threshold), band, growth)


def _build(cfg: Any, ctx: BuildContext) -> list[RewardComponent]:
    """Ground truth on labelled queries, the GNN's prediction on the others, after the warm-up (run if needed);
    with reward_model=oracle_noise, the diagnostic noisy oracle on the others instead (no warm-up)."""
    mr = cfg.reward.memreward
    if str(mr.reward_model) == ORACLE_NOISE:
        on = mr.oracle_noise
        log.warning(
            "reward.memreward.reward_model=oracle_noise: a DIAGNOSTIC control that reads the ground truth of "
            "unlabelled queries (flipped at fpr %.3g, fnr %.3g); not a method (docs/memreward.md#oracle-noise-control)",
            float(on.fpr),
            float(on.fnr),
        )
        return [GroundTruthReward(), OracleNoiseReward(float(on.fpr), float(on.fnr), int(on.seed))]
    if ctx.warmup is None:
        raise ValueError("reward=memreward needs the warm-up (BuildContext.warmup)")
    warm = ctx.warmup()
    return [GroundTruthReward(), memreward_component(cfg, ctx.run_dir, warm["encoder"])]


# the registry's entry (memrl.rewards.registry)
MEMREWARD = RewardSpec(_build, check_memreward_config)
