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
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from memrl.config.schema import MedsConfig
from memrl.errors import UserError
from memrl.grading.extract import extract_answer
from memrl.meds.anchor import AnchorFinder
from memrl.meds.diversity import AnswerNovelty, distinct_answers, top1_eigen_ratio
from memrl.meds.features import final_norm_module, layer_logits, output_head, select_layers
from memrl.meds.memory import CLUSTER_METHODS, NOISE_MODES, ErrorMemory
from memrl.meds.penalty import PENALTY_TARGETS, cluster_penalty, penalise, penalty_applies
from memrl.rewards.base import Group, HiddenStateRequest, RewardComponent, RewardContext, ScoringOutputs
from memrl.rewards.registry import BuildContext, RewardSpec


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
    ) -> None:
        if penalty_target not in PENALTY_TARGETS:
            raise ValueError(f"unknown meds.penalty_target={penalty_target}; valid: {', '.join(PENALTY_TARGETS)}")
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
        sizes_per_key = self.memory.step([(k, feats[by_key[k]].numpy()) for k in keys])
        t_cluster = time.perf_counter() - t1

        sizes = np.zeros(len(rollouts), dtype=np.int64)
        for k, ks in zip(keys, sizes_per_key):
            sizes[rows[by_key[k]]] = ks
        applies = [penalty_applies(c, self.target) for c in correct]
        penalties = [cluster_penalty(int(n), self.alpha, self.cap) if a else 0.0 for n, a in zip(sizes, applies)]
        start = 0
        for g in groups:
            end = start + len(g.rollouts)
            g.score = [
                penalise(s, c, int(n), self.target, self.alpha, self.cap)
                for s, c, n in zip(g.score, correct[start:end], sizes[start:end])
            ]
            g.extra["meds_cluster_size"] = [int(n) for n in sizes[start:end]]
            start = end

        answers = [[extract_answer(r.text, self.answer_formats) for r in g.rollouts] for g in groups]
        clusters = [self.memory.cluster_counts(k) for k in keys]
        wrong_sizes = [int(n) for n, c in zip(sizes, correct) if not c]
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


def build_meds(cfg: Any, ctx: BuildContext) -> MEDSShaper | None:
    """The shaper from the `meds` config group (None unless meds.enable), its settings checked."""
    meds_cfg = cfg.meds
    if not meds_cfg.enable:
        return None
    check_meds_config(cfg)
    if ctx.tokenizer is None:
        raise ValueError("meds.enable needs the policy's tokenizer")
    memory = ErrorMemory(
        k=int(meds_cfg.k),
        method=str(meds_cfg.cluster_method),
        min_cluster_size=int(meds_cfg.min_cluster_size),
        min_samples=int(meds_cfg.min_samples),
        noise=str(meds_cfg.noise),
        max_per_key=None if meds_cfg.max_per_prompt is None else int(meds_cfg.max_per_prompt),
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
    )


# the registry's entry (memrl.rewards.registry)
MEDS = RewardSpec(build_meds, check_meds_config)
