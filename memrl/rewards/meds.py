"""MEDS as a reward component (shaper `meds`): the error memory shapes the scores of the groups a step trains on.
The pieces it wires together (anchor, features, memory, penalty, diagnostics) are the package `memrl.meds`.

Phase 2 (`shape`), after dynamic sampling and inside the trainer's existing no-grad scoring pass
(`hidden_state_request`: no extra forward pass):

1. the anchor of each trained rollout (`memrl.meds.anchor`), where the scoring pass returns every layer's
   hidden state;
2. the layer-wise logits of the first answer token (`memrl.meds.features`);
3. per (prompt, correctness) memory: cluster sizes against past steps, then store and refit
   (`memrl.meds.memory`);
4. the penalty on the sequence score (`memrl.meds.penalty`), before group normalisation.

Correctness is the outcome the reward believes in: the ground truth on labelled queries, MemReward's
prediction on unlabelled ones (this combination is ours; neither paper has it). A rollout without an anchor
gets no feature, no memory entry and no penalty. Everything (memory, answer history) is checkpointed.

Options beyond the paper (issue 21; docs/meds.md#controls-and-options), each default the paper's:

- `meds.cluster_source=oracle`, a DIAGNOSTIC control: the cluster of a rollout is its true strategy, read
  from the synthetic task (`oracle_labeller`), not HDBSCAN's; it measures what a perfect clustering gives.
- `meds.count=visits`: a cluster weighs its distinct past visits, not its stored rollouts (`ErrorMemory`).
- `meds.apply_to=all_groups`: groups whose outcomes are all equal (all wrong, under the default target) are
  shaped too. DAPO's filter keeps them as candidates (`mark_shaping_candidates`); after shaping, a candidate
  is trained only if its scores now differ (`keep_after_shaping`). The trainer calls both.
- `meds/adv_shift` (`advantage_shift`): how much shaping moved the advantages of the groups it changed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from memrl.config.schema import MedsConfig
from memrl.data.problem import Problem
from memrl.errors import UserError
from memrl.grading.extract import extract_answer
from memrl.meds.anchor import AnchorFinder
from memrl.meds.diversity import AnswerNovelty, distinct_answers, top1_eigen_ratio
from memrl.meds.features import final_norm_module, layer_logits, output_head, select_layers
from memrl.meds.memory import CLUSTER_METHODS, CLUSTER_SOURCES, COUNT_MODES, NOISE_MODES, ErrorMemory
from memrl.meds.penalty import PENALTY_TARGETS, cluster_penalty, penalise, penalty_applies
from memrl.rewards.base import Group, HiddenStateRequest, RewardComponent, RewardContext, ScoringOutputs
from memrl.rewards.registry import BuildContext, RewardSpec

log = logging.getLogger(__name__)

APPLY_TO = ("after_filter", "all_groups")
# per-group extras: the scores before MEDS shaped them, and DAPO's candidates of apply_to=all_groups
UNSHAPED_SCORE = "meds_unshaped_score"
CANDIDATE = "meds_candidate"


class MEDSShaper(RewardComponent):
    """Memory-enhanced dynamic reward shaping.

    Args:
        tokenizer: the policy's tokenizer (anchor search).
        memory: the error memory (clustering settings).
        penalty_target: wrong | right | both | none.
        penalty_coef / penalty_cap: alpha and C.
        anchor_patterns: anchor strings.
        last_n_layers: layers kept (None: half); layer_diff: consecutive differences instead.
        final_norm: apply the final norm to every layer.
        answer_formats: how final answers are read for the answer-diversity metrics.
        oracle_label: (memory.source="oracle", a DIAGNOSTIC control) (problem, completion) -> the rollout's
            true strategy, its cluster; None otherwise.
        apply_to: after_filter (the paper) | all_groups (DAPO keeps uniform groups as candidates).
    """

    name = "meds"

    def __init__(
        self,
        tokenizer: Any,
        memory: ErrorMemory,
        # the defaults are the schema's (memrl.config.schema.MedsConfig), the one place they are written
        penalty_target: str = MedsConfig.penalty_target,
        penalty_coef: float = MedsConfig.penalty_coef,
        penalty_cap: float = MedsConfig.penalty_cap,
        anchor_patterns: tuple[str, ...] = ("\\boxed{",),
        last_n_layers: int | None = MedsConfig.last_n_layers,
        layer_diff: bool = MedsConfig.layer_diff,
        final_norm: bool = MedsConfig.final_norm,
        answer_formats: tuple[str, ...] = ("boxed", "hash"),
        oracle_label: Callable[[Problem, str], str | None] | None = None,
        apply_to: str = MedsConfig.apply_to,
    ) -> None:
        if penalty_target not in PENALTY_TARGETS:
            raise ValueError(f"unknown meds.penalty_target={penalty_target}; valid: {', '.join(PENALTY_TARGETS)}")
        if apply_to not in APPLY_TO:
            raise ValueError(f"unknown meds.apply_to={apply_to}; valid: {', '.join(APPLY_TO)}")
        if (oracle_label is None) != (memory.source != "oracle"):
            raise ValueError("an oracle_label function is given exactly when the memory's source is 'oracle'")
        self.anchor = AnchorFinder(tokenizer, anchor_patterns)
        self.memory = memory
        self.target = penalty_target
        self.alpha = float(penalty_coef)
        self.cap = float(penalty_cap)
        self.last_n = last_n_layers
        self.layer_diff = bool(layer_diff)
        self.final_norm = bool(final_norm)
        self.answer_formats = tuple(answer_formats)
        self.novelty = AnswerNovelty()
        self.oracle_label = oracle_label
        self.apply_to = apply_to

    def hidden_state_request(self) -> HiddenStateRequest:
        return HiddenStateRequest(positions=lambda rollouts: [self.anchor(r.token_ids, r.text) for r in rollouts])

    def features(self, scoring: ScoringOutputs, rollouts: list[Any]) -> tuple[np.ndarray, torch.Tensor]:
        """(indices of rollouts with an anchor, their [M, D] feature vectors)."""
        pos = scoring.positions
        if pos is None or scoring.hidden_states is None:
            raise ValueError("MEDS needs the scoring pass's hidden states at the anchors")
        rows = np.flatnonzero(pos.numpy() >= 0)
        if len(rows) == 0:
            return rows, torch.zeros(0, 0)
        targets = torch.tensor([rollouts[i].token_ids[int(pos[i]) + 1] for i in rows], dtype=torch.long)
        weight, bias = output_head(scoring.model)
        norm = final_norm_module(scoring.model) if self.final_norm else None
        logits = layer_logits(scoring.hidden_states[torch.as_tensor(rows)], targets, weight, bias, norm)
        return rows, select_layers(logits, self.last_n, self.layer_diff).cpu()

    def shape(self, groups: list[Group], scoring: ScoringOutputs, ctx: RewardContext) -> dict[str, float]:
        t0 = time.perf_counter()
        rollouts = [r for g in groups for r in g.rollouts]
        owner = [g for g in groups for _ in g.rollouts]  # the group of each rollout, in batch order
        # the outcome the reward believes (trained groups are judged): ground truth or a predicted reward
        correct = [o >= 0.5 for g in groups for o in g.outcome]
        # a distributed run computed them on each rank (trainer._shape_on_rank0)
        rows, feats = scoring.features if scoring.features is not None else self.features(scoring, rollouts)
        t_feat = time.perf_counter() - t0

        # one memory per (prompt, correctness): assign against past steps, then store and refit
        by_key: dict[tuple[str, int], list[int]] = {}
        for j, i in enumerate(rows):
            by_key.setdefault((owner[i].problem.id, int(correct[i])), []).append(j)
        t1 = time.perf_counter()
        keys = list(by_key)
        given = None
        if self.oracle_label is not None:  # the diagnostic control: each rollout's true strategy is its cluster
            given = [
                [self.oracle_label(owner[rows[j]].problem, rollouts[rows[j]].text) for j in by_key[k]] for k in keys
            ]
        sizes_per_key = self.memory.step([(k, feats[by_key[k]].numpy()) for k in keys], given)
        t_cluster = time.perf_counter() - t1

        sizes = np.zeros(len(rollouts), dtype=np.int64)
        for k, ks in zip(keys, sizes_per_key):
            sizes[rows[by_key[k]]] = ks
        applies = [penalty_applies(c, self.target) for c in correct]
        penalties = [cluster_penalty(int(n), self.alpha, self.cap) if a else 0.0 for n, a in zip(sizes, applies)]
        start = 0
        for g in groups:
            end = start + len(g.rollouts)
            g.extra[UNSHAPED_SCORE] = list(g.score)
            g.score = [
                penalise(s, c, int(n), self.target, self.alpha, self.cap)
                for s, c, n in zip(g.score, correct[start:end], sizes[start:end])
            ]
            g.extra["meds_cluster_size"] = [int(n) for n in sizes[start:end]]
            start = end

        answers = [[extract_answer(r.text, self.answer_formats) for r in g.rollouts] for g in groups]
        clusters = [self.memory.cluster_counts(k) for k in keys]
        wrong_sizes = [int(n) for n, c in zip(sizes, correct) if not c]
        candidates = [g for g in groups if g.extra.get(CANDIDATE)]
        out = {
            "meds/anchored_frac": len(rows) / max(1, len(rollouts)),
            "meds/penalised_frac": sum(p > 0 for p in penalties) / max(1, len(rollouts)),
            "meds/penalty_mean": float(np.mean(penalties)) if penalties else 0.0,
            "meds/cluster_size_wrong_mean": float(np.mean(wrong_sizes)) if wrong_sizes else math.nan,
            "meds/clusters_per_memory": float(np.mean([c for c, _ in clusters])) if clusters else math.nan,
            "meds/noise_per_memory": float(np.mean([n for _, n in clusters])) if clusters else math.nan,
            "meds/memory_vectors": float(len(self.memory)),
            "meds/memory_keys": float(len(self.memory.entries)),
            "meds/top1_eigen_ratio": top1_eigen_ratio(feats) if len(rows) >= 2 else math.nan,
            "meds/distinct_answers": float(np.mean([distinct_answers(a) for a in answers])) if answers else math.nan,
            "meds/answer_novelty": self.novelty.update([(g.problem.id, a) for g, a in zip(groups, answers)]),
            "meds/time_features_s": t_feat,
            "meds/time_cluster_s": t_cluster,
            "meds/time_total_s": time.perf_counter() - t0,
        }
        if self.apply_to == "all_groups":
            out["meds/candidate_groups"] = float(len(candidates))
            out["meds/candidate_groups_kept"] = float(sum(keep_after_shaping(candidates)))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "novelty": self.novelty.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.novelty.load_state_dict(state.get("novelty", {}))


def check_meds_config(cfg: Any) -> None:
    """The `meds` group's values, when on (a `UserError` names the key)."""
    meds_cfg = cfg.meds
    if not meds_cfg.enable:
        return
    checks = [
        ("penalty_target", str(meds_cfg.penalty_target), PENALTY_TARGETS),
        ("cluster_method", str(meds_cfg.cluster_method), CLUSTER_METHODS),
        ("noise", str(meds_cfg.noise), NOISE_MODES),
        ("cluster_source", str(meds_cfg.cluster_source), CLUSTER_SOURCES),
        ("count", str(meds_cfg.count), COUNT_MODES),
        ("apply_to", str(meds_cfg.apply_to), APPLY_TO),
    ]
    for key, value, valid in checks:
        if value not in valid:
            raise UserError(f"unknown meds.{key}={value}; valid: {', '.join(valid)}")
    if int(meds_cfg.k) < 1:
        raise UserError(f"meds.k must be >= 1, got {meds_cfg.k}")
    if int(meds_cfg.min_cluster_size) < 2:
        raise UserError(f"meds.min_cluster_size must be >= 2, got {meds_cfg.min_cluster_size}")
    if float(meds_cfg.penalty_coef) < 0 or float(meds_cfg.penalty_cap) < 0:
        raise UserError("meds.penalty_coef and meds.penalty_cap must be >= 0")
    if meds_cfg.max_per_prompt is not None and int(meds_cfg.max_per_prompt) < 1:
        raise UserError(f"meds.max_per_prompt must be >= 1 or null, got {meds_cfg.max_per_prompt}")
    if not any(str(p) for p in meds_cfg.anchor_patterns):
        raise UserError("meds.anchor_patterns is empty: give at least one, e.g. ['\\\\boxed{'] or ['####']")
    if str(meds_cfg.cluster_source) == "oracle":
        if str(meds_cfg.cluster_method) != "hdbscan":
            raise UserError(
                f"meds.cluster_source=oracle replaces the clustering: it cannot be combined with "
                f"meds.cluster_method={meds_cfg.cluster_method} (leave it at hdbscan)"
            )
        oracle_labeller(cfg)


def build_meds(cfg: Any, ctx: BuildContext) -> MEDSShaper | None:
    """The shaper from the `meds` config group (None unless meds.enable), its settings checked."""
    meds_cfg = cfg.meds
    if not meds_cfg.enable:
        return None
    check_meds_config(cfg)
    if ctx.tokenizer is None:
        raise ValueError("meds.enable needs the policy's tokenizer")
    oracle = None
    if str(meds_cfg.cluster_source) == "oracle":
        oracle = oracle_labeller(cfg)
        log.warning(
            "meds.cluster_source=oracle: a DIAGNOSTIC control; clusters are the task's true strategies, which no "
            "method can read (docs/meds.md#controls-and-options)"
        )
    memory = ErrorMemory(
        k=int(meds_cfg.k),
        method=str(meds_cfg.cluster_method),
        min_cluster_size=int(meds_cfg.min_cluster_size),
        min_samples=int(meds_cfg.min_samples),
        noise=str(meds_cfg.noise),
        max_per_key=None if meds_cfg.max_per_prompt is None else int(meds_cfg.max_per_prompt),
        source=str(meds_cfg.cluster_source),
        count=str(meds_cfg.count),
    )
    return MEDSShaper(
        ctx.tokenizer,
        memory,
        penalty_target=str(meds_cfg.penalty_target),
        penalty_coef=float(meds_cfg.penalty_coef),
        penalty_cap=float(meds_cfg.penalty_cap),
        anchor_patterns=tuple(str(p) for p in meds_cfg.anchor_patterns if str(p)),
        last_n_layers=None if meds_cfg.last_n_layers is None else int(meds_cfg.last_n_layers),
        layer_diff=bool(meds_cfg.layer_diff),
        final_norm=bool(meds_cfg.final_norm),
        answer_formats=tuple(str(getattr(f, "value", f)) for f in cfg.grading.answer_formats),
        oracle_label=oracle,
        apply_to=str(meds_cfg.apply_to),
    )


def oracle_labeller(cfg: Any) -> Callable[[Problem, str], str | None]:
    """meds.cluster_source=oracle (a DIAGNOSTIC control): (problem, completion) -> the strategy the training task
    knows produced it (`memrl.data.toys.behaviour_of`: the rule of rule_tags, the strategy of meds_strategies, the
    form of arithmetic), None when its answer matches none. Only the synthetic tasks know one.

    Raises:
        UserError: the training set is not the synthetic task.
    """
    ts = cfg.data.train_set
    source = None if ts is None else str(getattr(ts.source, "value", ts.source))
    if source != "synthetic":
        what = "no data.train_set" if ts is None else f"data.train_set {ts.name} (source={source})"
        raise UserError(
            "meds.cluster_source=oracle (a diagnostic control) needs a training task that knows each rollout's "
            f"strategy, i.e. data.train_set.source=synthetic (data.synthetic.task: arithmetic | rule_tags | "
            f"meds_strategies); this run has {what}: use meds.cluster_source=hdbscan"
        )
    from memrl.data.toys import behaviour_of

    task = cfg.data.synthetic
    return lambda problem, completion: behaviour_of(task, problem, completion)


def _meds_shaper(components: Sequence[Any]) -> MEDSShaper | None:
    return next((c for c in components if isinstance(c, MEDSShaper)), None)


def mark_shaping_candidates(components: Sequence[Any], groups: Sequence[Group]) -> list[bool]:
    """DAPO's filter with meds.apply_to=all_groups: which judged groups with equal outcomes (not kept by the
    filter) MEDS may still shape: those whose correctness its penalty_target applies to (all wrong, under the
    default). They are marked as candidates (`CANDIDATE`) and kept; `keep_after_shaping` drops those whose
    scores shaping left equal. All False without such a shaper (meds.apply_to=after_filter, the paper).

    Args:
        components: the reward pipeline's components.
        groups: judged groups.
    """
    shaper = _meds_shaper(components)
    if shaper is None or shaper.apply_to != "all_groups":
        return [False] * len(groups)
    out = []
    for g in groups:
        uniform = len({float(o) for o in g.outcome}) == 1
        ok = uniform and penalty_applies(float(g.outcome[0]) >= 0.5, shaper.target)
        if ok:
            g.extra[CANDIDATE] = True
        out.append(ok)
    return out


def keep_after_shaping(groups: Sequence[Group]) -> list[bool]:
    """After shaping: False for a candidate of `mark_shaping_candidates` whose scores are still all equal (up to
    float rounding, as `grpo_advantages` treats them: a spread at most 1e-6 of the scale), True otherwise."""

    def equal(scores: list[float]) -> bool:
        return max(scores) - min(scores) <= 1e-6 * max(1.0, *(abs(s) for s in scores))

    return [not (g.extra.get(CANDIDATE) and equal(g.score)) for g in groups]


def advantage_shift(
    groups: Sequence[Group], advantages: torch.Tensor, estimate: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, float]:
    """`meds/adv_shift`: over the rollouts of the groups MEDS changed, mean |A_shaped - A_unshaped| / mean
    |A_unshaped|, and the numerator alone (`meds/adv_shift_abs`).

    The ratio is left out when the unshaped advantages of those groups are all 0 (only all-wrong candidates of
    meds.apply_to=all_groups were changed: shaping made their whole signal).

    Args:
        groups: the trained groups, in batch order, after shaping.
        advantages: [N] the advantages of their shaped scores.
        estimate: [N] scores -> [N] advantages, the run's estimator (with the same groups).

    Returns:
        {} when MEDS shaped nothing this step.
    """
    if not any(UNSHAPED_SCORE in g.extra for g in groups):
        return {}
    before = torch.tensor([s for g in groups for s in g.extra.get(UNSHAPED_SCORE, g.score)], dtype=torch.float32)
    changed = torch.tensor(
        [g.extra.get(UNSHAPED_SCORE, g.score) != g.score for g in groups for _ in g.rollouts], dtype=torch.bool
    )
    if not changed.any():
        return {"meds/adv_shift": 0.0, "meds/adv_shift_abs": 0.0}
    shaped, unshaped = advantages.detach().float().cpu()[changed], estimate(before)[changed]
    shift = (shaped - unshaped).abs().mean().item()
    out = {"meds/adv_shift_abs": shift}
    scale = unshaped.abs().mean().item()
    if scale > 0:
        out["meds/adv_shift"] = shift / scale
    return out


# the registry's entry (memrl.rewards.registry)
MEDS = RewardSpec(build_meds, check_meds_config)
