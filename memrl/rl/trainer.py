"""The GRPO / DAPO training loop (docs/architecture.md#data-flow-of-memrl-train, step 4).

The math lives in `memrl.rl.core_algos`; this module only moves tensors between the pieces. One step, and
where each part of it is done (B groups of G = rollout.n rollouts; L = the longest response of the batch):

    step                                             function                                  file
    1. draw B prompts (a seeded permutation)         PromptSampler.next                        rl/sampler.py
    2. G rollouts per prompt                         engine.generate (HFEngine, VLLMEngine)    rollout/hf_engine.py,
                                                                                               rollout/vllm_engine.py
    3. rewards, phase 1: outcome and score           RewardPipeline.score (GroundTruthReward,  rewards/base.py,
       per rollout                                   MemRewardReward, OverlongPenalty)         rewards/oracle.py, ...
    4. dynamic sampling on the binary outcome,       Trainer.collect_groups, mixed_groups      rl/trainer.py,
       refilling from more generation batches                                                  rl/core_algos.py
    5. pad into one batch [B*G, L]                   build_batch                               rl/batch.py
    6. no-grad scoring pass: old and reference       Trainer._score -> forward_batch           rl/scoring.py
       log-probs, hidden states for a shaper
    7. rewards, phase 2: shaping (MEDS)              RewardPipeline.shape (MEDSShaper)         rewards/meds.py
    8. advantages per rollout                        ADV_ESTIMATORS[algo.adv_estimator]        rl/core_algos.py
    9. mini-batch updates: policy loss, KL,          Trainer._update; POLICY_LOSSES,           rl/trainer.py,
       entropy, aggregation, clipped AdamW step      KL_ESTIMATORS, agg_loss                   rl/core_algos.py
    10. new weights to the rollout engine            engine.sync_weights                       rollout/*.py
    11. metrics, validation, checkpoint              Trainer.fit, save                         rl/checkpoint.py

Every knob is read from the config where it is used (`cfg.algo`, `cfg.trainer`, `cfg.rollout`; the schema
and its help text: memrl/config/schema.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from memrl.config.schema import AlgoConfig, TrainAppConfig
from memrl.data.labels import GroundTruth
from memrl.data.problem import Problem
from memrl.dist.runtime import all_gather_objects, broadcast_object, gather_objects, global_sum, grad_norm_value
from memrl.errors import UserError
from memrl.grading import GradeItem
from memrl.memreward.metrics import binary_metrics
from memrl.rewards.base import Group, RewardContext, RewardPipeline, ScoringOutputs
from memrl.rl import checkpoint as ckpt
from memrl.rl.batch import RolloutBatch, build_batch
from memrl.rl.core_algos import ADV_ESTIMATORS, KL_ESTIMATORS, POLICY_LOSSES, agg_loss, mixed_groups
from memrl.rl.sampler import PromptSampler
from memrl.rl.scoring import autocast_context, forward_batch, resolve_compute_dtype
from memrl.rollout.records import SamplingParams
from memrl.utils.io import atomic_write_jsonl, read_jsonl_tolerant
from memrl.utils.progress import progress_bar

log = logging.getLogger(__name__)


def kl_coef(algo: AlgoConfig) -> float:
    """The KL term's coefficient: algo.kl_loss_coef with algo.use_kl_loss, else 0 (and no reference model)."""
    return float(algo.kl_loss_coef) if algo.use_kl_loss else 0.0


# what "best" means for keep_best_val: MemReward's find_best_checkpoint picks the best sample-weighted
# validation accuracy (greedy), which is the greedy accuracy over the pooled validation problems
BEST_VAL_KEY = "val/greedy_acc"


@dataclass
class StepResult:
    """What one step did: its metrics, and the groups it trained on (for tests and callers)."""

    metrics: dict[str, float]
    trained_groups: list[Group] = field(default_factory=list)


class Trainer:
    """GRPO / DAPO on a Hugging Face causal LM.

    Args:
        cfg: the run's config (`algo`, `trainer` and `rollout` groups, `seed`), read where used, never written: a
            typed `TrainAppConfig` or the composed DictConfig of that schema (`train_config` builds one).
        model: the policy (float32 parameters; `trainer.compute_dtype` autocasts on a GPU).
        tokenizer: its tokenizer (pad token set).
        engine: a rollout engine (`generate`, `sleep`, `sync_weights`).
        pipeline: the reward components.
        ground_truth: labels of the training queries (reward code reads labelled ones only).
        train_problems: the training queries.
        prompt_fn: problem -> prompt text.
        grader: grades completions.
        run_dir: the run directory root (`train/` goes under it).
        ref_model: frozen reference policy for the KL term (None when the KL coefficient is 0).
        validate: called with the step number, returns validation metrics (None: no validation).
        log_fn: receives each step's metrics (a tracker's `log`).
        dist_ctx: the process group of a `dist=fsdp2` run (`memrl.dist.runtime.DistContext`; the model already
            sharded), None in one process. Each rank then generates whole groups for its share of the prompts
            (each group under its own seed, so the rollouts do not depend on the number of ranks), rank 0 runs
            the reward components and the dynamic-sampling decision and broadcasts them, and each rank updates
            on its share of every mini-batch with the loss scaled to the global counts (docs/scaling.md).
        checkpointer: a `memrl.dist.checkpoint.DistCheckpointer` (with dist_ctx): sharded DCP checkpoints.
    """

    def __init__(
        self,
        cfg: TrainAppConfig,
        model: Any,
        tokenizer: Any,
        engine: Any,
        pipeline: RewardPipeline,
        ground_truth: GroundTruth,
        train_problems: Sequence[Problem],
        prompt_fn: Callable[[Problem], str],
        grader: Any,
        run_dir: Path,
        ref_model: Any = None,
        validate: Callable[[int], dict[str, float]] | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
        dist_ctx: Any = None,
        checkpointer: Any = None,
    ) -> None:
        a, t = cfg.algo, cfg.trainer
        if t.train_batch_size % t.ppo_mini_batch_size:
            raise ValueError(
                f"trainer.train_batch_size ({t.train_batch_size}) must be a multiple of "
                f"trainer.ppo_mini_batch_size ({t.ppo_mini_batch_size})"
            )
        self.kl_coef = kl_coef(a)
        if self.kl_coef > 0 and ref_model is None:
            raise ValueError("a KL coefficient > 0 needs a reference model")
        self.cfg = cfg
        # the registered implementations the config names (a plugin may have added them)
        self.adv_estimator = ADV_ESTIMATORS.get(a.adv_estimator)
        self.policy_loss = POLICY_LOSSES.get(a.policy_loss)
        self.kl_estimator = KL_ESTIMATORS.get(a.kl_loss_type)
        self.gen_batch_size = t.gen_batch_size or t.train_batch_size
        # keep the checkpoint of the best validation step (BEST_VAL_KEY) too, whatever max_ckpt_to_keep says
        self.keep_best_val = t.final_checkpoint == "best_val"
        self.model = model
        self.tokenizer = tokenizer
        self.engine = engine
        self.pipeline = pipeline
        self.gt = ground_truth
        self.ref_model = ref_model
        self.grader = grader
        self.validate = validate
        self.log_fn = log_fn
        self.dist = dist_ctx
        self.checkpointer = checkpointer
        self.world = dist_ctx.world_size if dist_ctx is not None else 1
        self.rank = dist_ctx.rank if dist_ctx is not None else 0
        # rank 0 writes the run directory's files (metrics.jsonl, checkpoints' shared parts) and logs metrics
        self.is_main = self.rank == 0
        self.device = next(model.parameters()).device
        self.compute_dtype = resolve_compute_dtype(t.compute_dtype, str(self.device))
        # oracle / partial rewards judge labelled queries only, so only those are drawn; a reward model
        # that judges unlabelled queries (MemReward) sets `trains_on_unlabelled`
        unlabelled_ok = any(getattr(c, "trains_on_unlabelled", False) for c in pipeline.components)
        pool = [p for p in train_problems if unlabelled_ok or ground_truth.is_labelled(p.id)]
        if not pool:
            raise ValueError("no training query is labelled: raise reward.label_ratio")
        self.problems = pool
        self.prompts = [prompt_fn(p) for p in pool]
        # trainer.total_epochs, when set, decides the number of steps: ceil(total_epochs * pool / train_batch_size),
        # the pool being the queries the run may train on (only the labelled ones for partial), as verl's
        self.total_steps = t.total_steps
        if t.total_epochs is not None:
            if t.total_epochs <= 0:
                raise ValueError(f"total_epochs must be > 0, got {t.total_epochs}")
            self.total_steps = steps_for_epochs(t.total_epochs, len(pool), t.train_batch_size)
            log.info("%g epochs over %d training queries: %d steps", t.total_epochs, len(pool), self.total_steps)
        self.sampler = PromptSampler(len(pool), cfg.seed)
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=t.lr,
            betas=tuple(t.betas),
            weight_decay=t.weight_decay,
        )
        warm = max(0, int(t.lr_warmup_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warm) if warm else 1.0
        )
        self.train_dir = Path(run_dir) / "train"
        self.metrics_path = self.train_dir / "metrics.jsonl"
        self.history: list[dict[str, float]] = []
        self.step = 0
        # {"step", "value"} of the best validation step so far (keep_best_val), saved with every checkpoint
        self.best_val: dict[str, float] | None = None

    # ------------------------------------------------------------------------------------------ run

    def fit(self) -> list[dict[str, float]]:
        """Train to `total_steps` (resuming from `train/latest` when `resume=auto`); returns the metrics."""
        tc = self.cfg.trainer
        self.train_dir.mkdir(parents=True, exist_ok=True)
        if tc.resume == "auto":
            self._maybe_resume()
        elif tc.resume != "disable":
            raise ValueError(f"unknown trainer.resume={tc.resume}; valid: auto, disable")
        if self.step == 0 and tc.val_before_train and self.validate:
            self._log({"step": 0, **self._validate(0)})
        bar = _Bar(tc.progress and self.is_main, self.total_steps, self.step)
        with bar:
            while self.step < self.total_steps:
                result = self.train_step()
                self.step += 1
                m = {"step": self.step, **result.metrics}
                if (
                    self.validate
                    and tc.test_freq > 0
                    and (self.step % tc.test_freq == 0 or self.step == self.total_steps)
                ):
                    m.update(self._validate(self.step))
                improved = self._track_best_val(m)
                self._log(m)
                bar.update(m)
                last = self.step == self.total_steps
                if last or improved or (tc.save_freq > 0 and self.step % tc.save_freq == 0):
                    t = time.time()
                    self.save()
                    log.info("checkpoint global_step_%d (%.1fs)", self.step, time.time() - t)
        if self.checkpointer is not None:
            self.checkpointer.wait()  # an async save's trainer state and train/latest
        return self.history

    def _track_best_val(self, m: dict[str, float]) -> bool:
        """With keep_best_val: whether this step's validation beats every earlier one (the first of equals
        wins); such a step is checkpointed and its checkpoint kept."""
        value = m.get(BEST_VAL_KEY)
        if not self.keep_best_val or value is None:
            return False
        if self.best_val is not None and value <= self.best_val["value"]:
            return False
        self.best_val = {"step": self.step, "value": float(value)}
        return True

    def best_val_checkpoint(self) -> Path | None:
        """The checkpoint of the best validation step (keep_best_val), or None."""
        if self.best_val is None:
            return None
        return self.train_dir / f"{ckpt.PREFIX}{int(self.best_val['step'])}"

    def _validate(self, step: int) -> dict[str, float]:
        # validation samples with its own seed and must not move the training RNG (resume equality)
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), autocast_context(self.device, self.compute_dtype):
            return self.validate(step)

    def _log(self, m: dict[str, float]) -> None:
        self.history.append(m)
        if not self.is_main:
            return
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
        if self.log_fn:
            self.log_fn({k: v for k, v in m.items() if k != "step"}, int(m["step"]))

    # ------------------------------------------------------------------------------------------ step

    def _generate(self, indices: list[int], first_draw: int = 0) -> list[Group] | None:
        """The groups of prompts `indices`; with dist_ctx: each rank generates its share, rank 0 gets them all
        (None on the other ranks). `first_draw`: the sampler's draw number of indices[0] (a group's seed)."""
        r = self.cfg.rollout
        params = SamplingParams(
            n=r.n,
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_new_tokens=r.max_new_tokens,
            stop=tuple(r.stop),
        )
        if self.dist is not None:
            return self._generate_share(indices, first_draw, params)
        with autocast_context(self.device, self.compute_dtype):
            out = self.engine.generate([self.prompts[i] for i in indices], params)
        return self._groups(indices, out)

    def _groups(self, indices: list[int], out: list[list[Any]]) -> list[Group]:
        return [
            Group(
                problem=GroundTruth.public(self.problems[i]),
                prompt=self.prompts[i],
                rollouts=rs,
                labelled=self.gt.is_labelled(self.problems[i].id),
            )
            for i, rs in zip(indices, out)
        ]

    def _generate_share(self, indices: list[int], first_draw: int, params: SamplingParams) -> list[Group] | None:
        """This rank's contiguous share of `indices`, one `generate` call per group under the seed of its draw
        number (the same rollouts for any number of ranks, and on resume); every rank makes the same number of
        calls (a rank with a shorter share repeats a prompt and drops it), as the sharded forward passes need."""
        share = split_evenly(len(indices), self.world)
        mine = share[self.rank]
        calls = max(len(x) for x in share)
        out: list[tuple[int, list[Any]]] = []
        for c in range(calls):
            j = mine[c] if c < len(mine) else (mine[0] if mine else 0)
            seeded = dataclasses.replace(params, seed=group_seed(int(self.cfg.seed), first_draw + j))
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            # the group's own seed must not move the training RNG (ranks generate different groups)
            with torch.random.fork_rng(devices=devices), autocast_context(self.device, self.compute_dtype):
                rollouts = self.engine.generate([self.prompts[indices[j]]], seeded)[0]
            if c < len(mine):
                out.append((j, rollouts))
        parts = gather_objects(out)
        if parts is None:
            return None
        done = dict(x for part in parts for x in part)
        return self._groups(indices, [done[j] for j in range(len(indices))])

    def _context(self) -> RewardContext:
        return RewardContext(self.gt, self.grader, self.step, self.cfg.rollout.max_new_tokens)

    def collect_groups(self, timing: dict[str, float]) -> tuple[list[Group], list[Group], int]:
        """Generate and reward until `train_batch_size` groups qualify (dynamic sampling) or the budget ends.

        Returns:
            (trained groups, every generated group, number of generation batches).
        """
        fg, batch_size = self.cfg.algo.filter_groups, self.cfg.trainer.train_batch_size
        kept: list[Group] = []
        generated: list[Group] = []
        batches = 0
        while True:
            t = time.time()
            first_draw = self.sampler.epoch * self.sampler.size + self.sampler.position
            groups = self._generate(self.sampler.next(self.gen_batch_size), first_draw)
            timing["gen"] += time.time() - t
            batches += 1
            stop = False
            if groups is not None:  # one process, or rank 0: the reward components and the keep / refill decision
                t = time.time()
                self.pipeline.score(groups, self._context())
                timing["reward"] += time.time() - t
                generated += groups
                judged = [g for g in groups if g.judged]
                if fg.enable:
                    # on the binary outcome, never on a shaped score (shaped all-fail groups would survive)
                    judged = [g for g, ok in zip(judged, mixed_groups([g.outcome for g in judged])) if ok]
                kept += judged
                stop = not fg.enable or len(kept) >= batch_size
                if not stop and 0 < fg.max_num_gen_batches <= batches:
                    log.warning(
                        "dynamic sampling: %d of %d groups after %d generation batches; training on those",
                        len(kept),
                        batch_size,
                        batches,
                    )
                    stop = True
            # rank 0 decides for every rank (the same number of generation batches and micro-steps everywhere)
            if broadcast_object(stop):
                break
        if self.dist is not None:
            kept = broadcast_object(kept[:batch_size] if self.is_main else None)
        return kept[:batch_size], generated, batches

    def train_step(self) -> StepResult:
        """One RL step; returns its metrics."""
        t_cfg = self.cfg.trainer
        t_step = time.time()
        timing = {"gen": 0.0, "reward": 0.0, "old_log_prob": 0.0, "ref": 0.0, "adv": 0.0, "update_actor": 0.0}
        groups, generated, n_batches = self.collect_groups(timing)
        metrics: dict[str, float] = {"batch/num_gen_batches": n_batches, "batch/trained_groups": len(groups)}
        if self.is_main:  # the other ranks of a distributed run have only the trained groups
            metrics.update(self._generation_metrics(generated))
            metrics.update(self.pipeline.metrics(generated))
        if not groups:
            if self.is_main:
                log.warning("step %d: no group to train on (all outcomes equal); skipping the update", self.step + 1)
            with warnings.catch_warnings():  # the schedule counts RL steps, updated or not
                warnings.simplefilter("ignore", UserWarning)
                self.scheduler.step()
            metrics.update(self._time_metrics(timing, t_step, 0))
            return StepResult(metrics, [])

        rollouts = [r for g in groups for r in g.rollouts]
        gids = [i for i, g in enumerate(groups) for _ in g.rollouts]
        batch = build_batch(
            rollouts, gids, [0.0] * len(rollouts), self.tokenizer.pad_token_id, self.cfg.algo.mask_truncated_completions
        )
        batch = batch.to(self.device)

        # the no-grad scoring pass: needed when the update is not purely on-policy (several optimiser steps
        # or epochs), or when a reward component wants hidden states; otherwise old = current, detached
        request = self.pipeline.hidden_state_request()
        n_mini = t_cfg.train_batch_size // t_cfg.ppo_mini_batch_size
        positions = None
        if request is not None:
            t = time.time()
            positions = torch.tensor(request.positions(rollouts), dtype=torch.long)
            timing["hidden_positions"] = time.time() - t
        hidden = None
        if n_mini > 1 or t_cfg.ppo_epochs > 1 or request is not None:
            t = time.time()
            batch.old_log_prob, hidden = self._score(self.model, batch, positions)
            timing["old_log_prob"] = time.time() - t
        if self.ref_model is not None:
            t = time.time()
            batch.ref_log_prob, _ = self._score(self.ref_model, batch, None)
            timing["ref"] = time.time() - t

        t = time.time()
        scoring = ScoringOutputs(hidden_states=hidden, positions=positions, model=self.model)
        if self.dist is None:
            shape_metrics = self.pipeline.shape(groups, scoring, self._context())
        else:
            shape_metrics = self._shape_on_rank0(groups, rollouts, scoring)
        metrics.update(shape_metrics)
        # [B*G]
        batch.scores = torch.tensor([x for g in groups for x in g.score], dtype=torch.float32, device=self.device)
        adv = self.adv_estimator.outcome(batch.scores.cpu(), gids, self.cfg.algo).to(self.device)  # [B*G]
        batch.advantages = adv.unsqueeze(1) * batch.response_mask  # [B*G, L]
        timing["adv"] = time.time() - t
        metrics.update(
            {
                "critic/score/mean": batch.scores.mean().item(),
                "critic/advantages/max": adv.max().item(),
                "critic/advantages/min": adv.min().item(),
                "reward/acc_trained": _mean([o for g in groups for o in g.outcome]),
            }
        )

        t = time.time()
        # a colocated engine that can (vLLM on a GPU) frees its memory for the update; sync_weights wakes it
        self.engine.sleep()
        metrics.update(self._update(batch, groups, n_mini))
        timing["update_actor"] = time.time() - t
        self.engine.sync_weights(self.model)
        metrics.update(self._time_metrics(timing, t_step, int(batch.attention_mask.sum().item())))
        if self.is_main:
            metrics.update(self._metrics_only_truth(generated))
        return StepResult(metrics, groups)

    def _shape_on_rank0(self, groups: list[Group], rollouts: list[Any], scoring: ScoringOutputs) -> dict[str, float]:
        """Phase 2 of the rewards in a distributed run: each rank turns the hidden states of its share of the
        rows into the shaper's features (e.g. MEDS's [rollouts x layers] logits), rank 0 gathers them, runs
        the stateful shaping on every group, and broadcasts the scores (and per-rollout extras) back."""
        features = None
        if scoring.hidden_states is not None:
            mine = split_evenly(len(rollouts), self.world)[self.rank]
            local = ScoringOutputs(scoring.hidden_states, scoring.positions[mine], self.model)
            # the shaper reads the output head and final norm: the root group's full parameters, gathered
            unshard = getattr(self.model, "unshard", None)
            if unshard is not None:
                unshard()
            try:
                rows, feats = self.pipeline.features(local, [rollouts[i] for i in mine])
            finally:
                if unshard is not None:
                    self.model.reshard()
            parts = gather_objects((mine, rows, feats))
            if parts is not None:
                all_rows = [m[int(i)] for m, rs, _ in parts for i in rs]
                nonempty = [f for _, rs, f in parts if len(rs)]
                features = (
                    torch.tensor(all_rows, dtype=torch.long).numpy(),
                    torch.cat(nonempty) if nonempty else torch.zeros(0, 0),
                )
        out: dict[str, float] = {}
        if self.is_main:
            done = ScoringOutputs(None, scoring.positions, None, features=features)
            out = self.pipeline.shape(groups, done, self._context())
        shaped = broadcast_object([(g.score, g.extra) for g in groups] if self.is_main else None)
        for g, (score, extra) in zip(groups, shaped):
            g.score, g.extra = score, extra
        return out

    def _metrics_only_truth(self, generated: list[Group]) -> dict[str, float]:
        """How right the rewards were on unlabelled queries, from their ground truth: metrics only.

        Runs after the update, when nothing can feed back into this step's rewards, filters or models.
        """
        todo = [g for g in generated if not g.labelled]
        if not todo:
            return {}

        items = [
            GradeItem(
                g.problem.domain, r.text, self.gt.metrics_answer(g.problem.id), self.gt.metrics_metadata(g.problem.id)
            )
            for g in todo
            for r in g.rollouts
        ]
        truth = [float(res.correct) for res in self.grader.grade_batch(items)]
        believed = [o for g in todo for o in g.outcome]
        pairs = [(t, b) for t, b in zip(truth, believed) if b is not None]
        out = {"metrics_only/acc_unlabelled": _mean(truth)}
        if pairs:
            # the believed outcome as a prediction of the truth: how good the reward model was this step
            m = binary_metrics(torch.tensor([b for _, b in pairs]), torch.tensor([t for t, _ in pairs]))
            out["metrics_only/outcome_agreement_unlabelled"] = m["accuracy"]
            out.update({f"metrics_only/reward_{k}": m[k] for k in ("precision", "recall", "f1", "fpr")})
        return out

    @torch.no_grad()
    def _score(self, model: Any, batch: RolloutBatch, positions: torch.Tensor | None):
        was = model.training
        model.eval()
        logps, hiddens = [], []
        micro = self.cfg.trainer.micro_batch_size
        # distributed: this rank's share of the rows (the same number of forward calls on every rank)
        shares = split_evenly(len(batch), self.world)
        mine = shares[self.rank]
        calls = [mine[i : i + micro] for i in range(0, len(mine), micro)]
        calls += [[]] * (max(-(-len(x) // micro) for x in shares) - len(calls))
        try:
            for idx in calls:
                if not idx:  # a padding call: every rank runs the same sharded forward passes
                    forward_batch(
                        model, batch.select([0]), self.cfg.rollout.temperature, compute_dtype=self.compute_dtype
                    )
                    continue
                out = forward_batch(
                    model,
                    batch.select(idx),
                    self.cfg.rollout.temperature,
                    hidden_positions=None if positions is None else positions[idx],
                    compute_dtype=self.compute_dtype,
                )
                logps.append(out.log_prob)
                if out.hidden_states is not None:
                    hiddens.append(out.hidden_states.cpu())
        finally:
            model.train(was)
        logp = torch.cat(logps) if logps else batch.response_mask[:0].float()
        if self.dist is not None:
            # every rank needs every row's log-probs (any rank may train on any row); hidden states stay local
            logp = torch.cat([x.to(self.device) for x in all_gather_objects(logp.cpu())])
        return logp, (torch.cat(hiddens) if hiddens else None)

    def _update(self, batch: RolloutBatch, groups: list[Group], n_mini: int) -> dict[str, float]:
        a, t = self.cfg.algo, self.cfg.trainer
        self.model.train()
        token_adv = self.adv_estimator.token
        need_entropy = token_adv is not None or a.entropy_coeff != 0
        agg = dict(loss_agg_mode=a.loss_agg_mode)
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}

        def add(key: str, value: float, weight: float = 1.0) -> None:
            sums[key] = sums.get(key, 0.0) + value * weight
            counts[key] = counts.get(key, 0.0) + weight

        rows_of = {}
        start = 0
        for i, g in enumerate(groups):
            rows_of[i] = list(range(start, start + len(g.rollouts)))
            start += len(g.rollouts)
        for _ in range(t.ppo_epochs):
            order = list(range(len(groups)))
            if t.ppo_epochs > 1:
                # rank 0's shuffle for every rank
                order = broadcast_object(torch.randperm(len(groups)).tolist())
            for m in range(n_mini):
                mini_groups = order[m * t.ppo_mini_batch_size : (m + 1) * t.ppo_mini_batch_size]
                rows = [r for gi in mini_groups for r in rows_of[gi]]
                if not rows:
                    continue
                # distributed: this rank's share of the mini-batch's rows; `calls` pads every rank to the same
                # number of micro-steps (the sharded forward and backward passes are collectives)
                shares = split_evenly(len(rows), self.world)
                mb = batch.select([rows[i] for i in shares[self.rank]] or rows[:1])  # [b*G / W, L]
                local = shares[self.rank]
                n_calls = max(-(-len(x) // t.micro_batch_size) for x in shares)
                local_tokens = mb.response_mask.sum().item() if local else 0.0
                # the loss is normalised by the whole mini-batch's counts (all ranks), and multiplied by the
                # number of ranks, which FSDP2's gradient average divides out: the result does not depend on it
                norm = dict(
                    num_tokens=global_sum(local_tokens) if self.dist is not None else local_tokens,
                    num_seqs=len(rows),
                    norm_length=float(self.cfg.rollout.max_new_tokens),
                )
                self.optimizer.zero_grad(set_to_none=True)
                mb_loss = mb_pg = 0.0
                # this mini-batch's entropy and KL, summed from its micro-batches' shares (as its loss is)
                mb_terms: dict[str, float] = {}
                for c in range(n_calls):
                    mstart = c * t.micro_batch_size
                    if mstart >= len(local):  # padding: a forward and backward that contribute nothing
                        pad = forward_batch(
                            self.model, mb.select([0]), self.cfg.rollout.temperature, compute_dtype=self.compute_dtype
                        )
                        (pad.log_prob.sum() * 0.0).backward()
                        continue
                    mu = mb.select(list(range(mstart, min(mstart + t.micro_batch_size, len(mb)))))  # [M, L]
                    # log_prob, entropy: [M, L]
                    out = forward_batch(
                        self.model,
                        mu,
                        self.cfg.rollout.temperature,
                        with_entropy=need_entropy,
                        compute_dtype=self.compute_dtype,
                    )
                    adv = mu.advantages  # [M, L]
                    if token_adv is not None:
                        adv = token_adv(adv, out.entropy, a) * mu.response_mask  # [M, L]
                    old = mu.old_log_prob if mu.old_log_prob is not None else out.log_prob.detach()  # [M, L]
                    # a scalar: this micro-batch's share of the mini-batch's loss (norm: the mini-batch's counts)
                    pg_loss, stats = self.policy_loss(out.log_prob, old, adv, mu.response_mask, a, **agg, **norm)
                    loss = pg_loss
                    w = mu.response_mask.sum().item()
                    if out.entropy is not None:
                        ent = agg_loss(out.entropy, mu.response_mask, a.loss_agg_mode, **norm)  # [M, L] -> []
                        if a.entropy_coeff != 0:
                            loss = loss - a.entropy_coeff * ent
                        mb_terms["actor/entropy"] = mb_terms.get("actor/entropy", 0.0) + ent.item()
                    if mu.ref_log_prob is not None:
                        kl = agg_loss(  # [M, L] -> []
                            self.kl_estimator(out.log_prob, mu.ref_log_prob, mu.response_mask),
                            mu.response_mask,
                            a.loss_agg_mode,
                            **norm,
                        )
                        loss = loss + self.kl_coef * kl
                        mb_terms["actor/kl_loss"] = mb_terms.get("actor/kl_loss", 0.0) + kl.item()
                    (loss * self.world).backward()
                    mb_loss += loss.item()
                    mb_pg += pg_loss.item()
                    add("actor/pg_clipfrac", stats["clipfrac"].item(), w)
                    add("actor/pg_clipfrac_lower", stats["clipfrac_lower"].item(), w)
                    add("actor/ppo_kl", stats["approx_kl"].item(), w)
                # a DTensor under FSDP2: read through full_tensor()
                grad_norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip))
                if math.isfinite(grad_norm):
                    self.optimizer.step()
                else:
                    log.warning("non-finite gradient norm; optimiser step skipped")
                    self.optimizer.zero_grad(set_to_none=True)
                if self.dist is not None:  # the mini-batch's loss terms: the sum of every rank's shares
                    keys = sorted(mb_terms)
                    summed = all_gather_objects([mb_loss, mb_pg, *(mb_terms[k] for k in keys)])
                    mb_loss, mb_pg, *rest = [sum(v) for v in zip(*summed)]
                    mb_terms = dict(zip(keys, rest))
                add("actor/grad_norm", grad_norm)
                add("actor/pg_loss", mb_pg)
                add("actor/loss", mb_loss)
                for key, value in mb_terms.items():
                    add(key, value)
        lr = self.scheduler.get_last_lr()[0]
        with warnings.catch_warnings():  # the schedule counts RL steps, the optimiser step skipped or not
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        if self.dist is not None:  # the token-weighted statistics over every rank's tokens
            weighted = ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl")
            parts = all_gather_objects({k: (sums.get(k, 0.0), counts.get(k, 0.0)) for k in weighted})
            for k in weighted:
                sums[k], counts[k] = sum(p[k][0] for p in parts), sum(p[k][1] for p in parts)
        # averages over the mini-batches that ran (an empty one, fewer groups than train_batch_size, is none)
        out = {k: sums[k] / counts[k] for k in sums if counts[k] > 0}
        out["actor/lr"] = lr
        return out

    # ------------------------------------------------------------------------------------------ metrics

    def _generation_metrics(self, generated: list[Group]) -> dict[str, float]:
        rollouts = [r for g in generated for r in g.rollouts]
        lengths = [r.num_tokens for r in rollouts]
        judged = [g for g in generated if g.judged]
        out = {
            "response_length/mean": _mean(lengths),
            "response_length/max": float(max(lengths)) if lengths else 0.0,
            "response_length/clip_ratio": _mean([r.finish_reason == "length" for r in rollouts]),
            "batch/mixed_group_frac": _mean(mixed_groups([g.outcome for g in judged])) if judged else 0.0,
            "reward/acc_generated": _mean([o for g in judged for o in g.outcome]),
            # honest accounting: distinct ground-truth labels the reward path has read so far
            "labels/read_train": float(len(self.gt.reads)),
        }
        return out

    def _time_metrics(self, timing: dict[str, float], t_step: float, tokens: int) -> dict[str, float]:
        step_time = time.time() - t_step
        out = {f"timing_s/{k}": v for k, v in timing.items()}
        out.update(
            {
                "perf/time_per_step": step_time,
                "perf/total_num_tokens": float(tokens),
                "perf/throughput": tokens / step_time if step_time > 0 else 0.0,
            }
        )
        return out

    # ------------------------------------------------------------------------------------------ state

    def save(self) -> Path:
        trainer_state = {
            "sampler": self.sampler.state_dict(),
            # rank 0's: the reward components run there (the other ranks of a distributed run read no label)
            "label_reads": sorted(self.gt.reads),
            "labelled_ids": sorted(self.gt.labelled_ids),
            "best_val": self.best_val,
        }
        protect = frozenset() if self.best_val is None else frozenset({int(self.best_val["step"])})
        if self.checkpointer is not None:
            return self.checkpointer.save(
                self.step,
                self.model,
                self.optimizer,
                self.scheduler,
                trainer_state=trainer_state,
                reward_state=self.pipeline.state_dict() if self.is_main else None,
                protect=protect,
                export_tokenizer=self.tokenizer,
            )
        return ckpt.save_checkpoint(
            self.train_dir,
            self.step,
            self.model,
            self.tokenizer,
            self.optimizer,
            self.scheduler,
            trainer_state,
            self.pipeline.state_dict(),
            keep=self.cfg.trainer.max_ckpt_to_keep,
            protect=protect,
        )

    def _maybe_resume(self) -> None:
        path = ckpt.latest_checkpoint(self.train_dir)
        if path is None:
            return
        if self.checkpointer is not None:
            state = self.checkpointer.load(path, self.model, self.optimizer, self.scheduler)
        else:
            state = ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        saved_split = state["trainer"].get("labelled_ids")
        if saved_split is not None and set(saved_split) != set(self.gt.labelled_ids):
            raise UserError(
                f"{path} was trained with another label split ({len(saved_split)} labelled queries, now "
                f"{len(self.gt.labelled_ids)}): resume with the run's reward.label_ratio, reward.label_seed and data"
            )
        self.step = int(state["trainer"]["step"])
        self.best_val = state["trainer"].get("best_val")
        self.sampler.load_state_dict(state["trainer"]["sampler"])
        if self.is_main:  # the reward components (and the labels they read) live on rank 0
            self.gt.reads.update(state["trainer"].get("label_reads", []))
            self.pipeline.load_state_dict(state["rewards"])
        self.engine.sync_weights(self.model)
        # metrics written after the checkpoint by the killed run are dropped: they will be recomputed
        if self.metrics_path.exists() and self.is_main:
            # lines torn by the kill are skipped
            rows = [r for r in read_jsonl_tolerant(self.metrics_path) if r.get("step", 0) <= self.step]
            atomic_write_jsonl(self.metrics_path, rows)
            self.history = rows
        log.info("resumed from %s (step %d)", path, self.step)


def split_evenly(n: int, parts: int) -> list[list[int]]:
    """range(n) in `parts` contiguous chunks whose sizes differ by at most one (the first ones longer)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        size = base + (1 if p < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


def group_seed(seed: int, draw: int) -> int:
    """The sampling seed of the `draw`-th prompt a run draws (distributed runs: independent of the rank)."""
    return (seed * 1_000_003 + draw) % (2**31 - 1)


def steps_for_epochs(epochs: float, pool_size: int, train_batch_size: int) -> int:
    """RL steps that draw `epochs` passes over a pool of `pool_size` queries, `train_batch_size` a step (>= 1)."""
    return max(1, math.ceil(epochs * pool_size / train_batch_size))


def _mean(xs: Sequence[float | bool | None]) -> float:
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else math.nan


class _Bar:
    """A rich progress bar: step, reward, accuracy, ETA."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.enabled = enabled
        self.total, self.start = total, start
        self.bar = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            self.bar = progress_bar("train")
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def update(self, m: dict[str, float]) -> None:
        if self.bar is None:
            log.info(
                "step %d: score %.3f acc %.3f (%.1fs)",
                m["step"],
                m.get("critic/score/mean", math.nan),
                m.get("reward/acc_generated", math.nan),
                m.get("perf/time_per_step", math.nan),
            )
            return
        info = f"score {m.get('critic/score/mean', math.nan):.3f}  acc {m.get('reward/acc_generated', math.nan):.3f}"
        if "val/greedy_acc" in m:
            info += f"  val greedy {m['val/greedy_acc']:.3f}"
        self.bar.update(self.task, completed=m["step"], info=info)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
