"""`memrl train`: RL fine-tuning (GRPO / DAPO) of a policy, with periodic validation and checkpoints.

Runbook:
    memrl train                                     # the embedded default: tiny model, synthetic task, DAPO-style
    memrl train algo=grpo trainer.total_steps=100   # GRPO preset (KL 0.001, seq-mean-token-mean, no filter)
    memrl train reward=partial reward.label_ratio=0.2   # R1-p: train only on the labelled 20%
    memrl train --resume outputs/train/<run>        # continue a killed run from its last checkpoint
    memrl train --resume outputs/train/<run> trainer.total_steps=200   # continue a finished run for more steps
    memrl eval model.name_or_path=outputs/train/<run>   # evaluate the trained policy

Writes `train/metrics.jsonl` (one object per step), `train/curves.png` (accuracy, reward, mixed groups,
length, entropy / KL, update size against step), `train/global_step_N/` checkpoints with `train/latest`,
`train/summary.json` (label accounting, initial and final scores), and, with `trainer.final_eval`, `eval/results_initial_*.json` and `eval/results_final_*.json` on
`data.eval_sets` (the same measurement as `memrl eval`).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from memrl.data.loaders import load_eval_sets
from memrl.dist.env import require_launch
from memrl.dist.runtime import barrier, enum_value, init_distributed, shutdown
from memrl.errors import UserError
from memrl.eval.runner import EvalSettings, evaluate_problems
from memrl.grading.build import build_grader
from memrl.policy.load import load_policy
from memrl.rewards.registry import BuildContext, build_reward_pipeline, check_reward_config
from memrl.rl.checkpoint import latest_checkpoint, load_policy_weights
from memrl.rl.core_algos import ADV_ESTIMATORS, KL_ESTIMATORS, LOSS_AGG_MODES, POLICY_LOSSES
from memrl.rl.plots import plot_training_curves
from memrl.rl.scoring import resolve_compute_dtype
from memrl.rl.trainer import BEST_VAL_KEY, Trainer, kl_coef
from memrl.rollout.build import build_engine
from memrl.run_dir import RunDir, check_steps, original_command
from memrl.stages.common import label_ratio, load_training_data, prompt_builder, seed_everything
from memrl.stages.evaluate import evaluate_model
from memrl.tracking import NoTracker, build_tracker
from memrl.utils.io import atomic_write_json
from memrl.utils.registry import import_plugins

log = logging.getLogger(__name__)

FINAL_CHECKPOINTS = ("last", "best_val")


def check_config(cfg: DictConfig) -> None:
    """Fail before any model is loaded, naming the key, on values the run would only reject later; the
    registered names (`algo.adv_estimator`, `algo.policy_loss`, `algo.kl_loss_type`, `reward.name`,
    `reward.shapers`) are looked up after `plugins` are imported."""
    a, t, r = cfg.algo, cfg.trainer, cfg.rollout
    if int(r.n) < 1:
        raise UserError(f"rollout.n must be >= 1, got {r.n}")
    if int(t.train_batch_size) % int(t.ppo_mini_batch_size):
        raise UserError(
            f"trainer.train_batch_size ({t.train_batch_size}) must be a multiple of trainer.ppo_mini_batch_size "
            f"({t.ppo_mini_batch_size})"
        )
    if str(a.filter_groups.metric) != "acc":
        raise UserError(
            "algo.filter_groups.metric must be acc: dynamic sampling filters on the binary outcome, never on a "
            "shaped score (shaped all-fail groups would survive and wreck the policy)"
        )
    if str(a.loss_agg_mode) not in LOSS_AGG_MODES:
        raise UserError(f"unknown algo.loss_agg_mode={a.loss_agg_mode}; valid: {', '.join(LOSS_AGG_MODES)}")
    ADV_ESTIMATORS.get(str(a.adv_estimator))
    POLICY_LOSSES.get(str(a.policy_loss))
    KL_ESTIMATORS.get(str(a.kl_loss_type))
    resolve_compute_dtype(str(t.compute_dtype), "cpu")
    if str(t.final_checkpoint) not in FINAL_CHECKPOINTS:
        raise UserError(f"unknown trainer.final_checkpoint={t.final_checkpoint}; valid: {', '.join(FINAL_CHECKPOINTS)}")
    if str(t.final_checkpoint) == "best_val" and (int(t.test_freq) <= 0 or cfg.data.val_set is None):
        raise UserError(
            "trainer.final_checkpoint=best_val picks the best validation step: it needs trainer.test_freq > 0 "
            f"(got {t.test_freq}) and a data.val_set"
        )
    if float(a.kl_loss_coef) < 0:
        raise UserError(f"algo.kl_loss_coef must be >= 0, got {a.kl_loss_coef}")
    label_ratio(cfg)
    check_reward_config(cfg)


def _wait_for_rank0() -> None:
    """A barrier without a practical deadline, on a gloo group of its own (rank 0's MemReward warm-up)."""
    import torch.distributed as dist

    group = dist.new_group(backend="gloo", timeout=_dt.timedelta(days=7))
    try:
        barrier(group)
    finally:
        dist.destroy_process_group(group)


def label_accounting(
    ratio: float, n_labelled: int, train_reads: set[str], val_ids: set[str], warmup: dict[str, Any] | None
) -> dict[str, Any]:
    """Every ground-truth label a run consumed, counted once per query.

    Args:
        ratio / n_labelled: the run's label budget (reward.label_ratio) and its labelled training queries.
        train_reads: training queries whose label the RL reward path read.
        val_ids: validation queries whose labels periodic validation read (empty without validation).
        warmup: MemReward's warm-up labels (`memrl.memreward.artifacts.warmup_labels`): the labelled queries of
            the memory and the GNN's extra validation queries (on top of the budget with val_source=split).
    """
    train = set(train_reads) | set((warmup or {}).get("labelled_ids", []))
    validation = set(val_ids) | set((warmup or {}).get("extra_validation_ids", []))
    return {
        "label_ratio": ratio,
        "labelled_train_queries": n_labelled,
        "train_labels_read": len(train),
        "validation_labels_used": len(validation),
        "gnn_validation_labels": len((warmup or {}).get("extra_validation_ids", [])),
        "total_labels_consumed": len(train) + len(validation),
    }


def finished_summary(run_dir: RunDir, total_steps: int) -> dict[str, Any] | None:
    """The run's train/summary.json when it ended after `total_steps` steps or more, and its last checkpoint
    (train/latest) is still that step's (else None: a checkpoint rolled back by hand resumes from there)."""
    train = Path(run_dir.root) / "train"
    latest = latest_checkpoint(train)
    if latest is None or not (train / "summary.json").is_file():
        return None
    try:
        summary = json.loads((train / "summary.json").read_text())
    except json.JSONDecodeError:
        return None  # written atomically, so only a hand-edited file gets here: train again
    steps = int(summary.get("steps", 0))
    return summary if steps >= int(total_steps) and latest.name == f"global_step_{steps}" else None


def run(cfg: DictConfig, run_dir: RunDir) -> dict[str, Any]:
    """Train as configured; returns the final evaluation (or the last step's metrics).

    With `dist=fsdp2` (under torchrun) every rank runs this; rank 0 alone writes the run directory's files.
    """
    env = require_launch(enum_value(cfg.dist.strategy), argv=original_command())
    if enum_value(cfg.dist.strategy) != "fsdp2":
        return _run(cfg, run_dir, None)
    # joining the group waits for every rank, so rank 0 has prepared the run directory (apps.run_stage)
    ctx = init_distributed(cfg.dist, env)
    try:
        return _run(cfg, run_dir, ctx)
    finally:
        shutdown()


def _run(cfg: DictConfig, run_dir: RunDir, ctx: Any) -> dict[str, Any]:
    main = ctx is None or ctx.is_main
    # load: plugins first (they register names the config may use), then checks, data, policy
    import_plugins(cfg.plugins)
    check_config(cfg)
    seed_everything(int(cfg.seed))
    train_problems, val_problems, ground_truth = load_training_data(cfg)
    labelled = ground_truth.labelled_ids

    # parameters and optimiser stay float32 (lr 1e-6 updates vanish in bf16); the forward passes autocast
    model_cfg = copy.deepcopy(cfg.model)
    if str(model_cfg.dtype) == "auto":
        OmegaConf.set_struct(model_cfg, False)
        model_cfg.dtype = "float32"
    if ctx is not None:
        # each rank loads the whole policy onto its own device (cuda:LOCAL_RANK, or the CPU), then shards it
        OmegaConf.set_struct(model_cfg, False)
        model_cfg.device = str(ctx.device)
    model, tokenizer, model_path = load_policy(model_cfg, cfg.paths.cache_dir, cfg.data.synthetic)
    if cfg.trainer.gradient_checkpointing:
        # transformers renamed it (the old name now warns); older releases have only the old name
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    model.train()
    ref_model = None
    if kl_coef(cfg.algo) > 0:
        ref_model = copy.deepcopy(model).eval()
        ref_model.requires_grad_(False)
        log.info("reference model loaded for the KL term (coef %g, %s)", kl_coef(cfg.algo), cfg.algo.kl_loss_type)

    prompt_fn, style = prompt_builder(cfg, tokenizer)
    engine = build_engine(cfg.rollout, model, tokenizer)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    if main:
        tracker = build_tracker(cfg.logger, str(run_dir.root), config, name=f"train-{Path(run_dir.root).name}")
    else:
        tracker = NoTracker()
    eval_sets = (
        load_eval_sets(cfg.data.eval_sets, Path(cfg.paths.data_dir), cfg.data.synthetic, limit=cfg.eval.limit)
        if cfg.trainer.final_eval and cfg.data.eval_sets
        else {}
    )

    with build_grader(cfg.grading) as grader:
        warmed: dict[str, Any] = {}

        def warmup() -> dict[str, Any]:
            # MemReward's warm-up rolls out the initial policy: before any update (skipped when its artifacts exist);
            # its modules load the graph library (torch_geometric), so only a MemReward run imports them
            from memrl.stages.warmup import run_warmup

            if main:
                warmed.update(run_warmup(cfg, run_dir, (engine, prompt_fn, grader)))
            if ctx is not None:
                # distributed: rank 0 warms up alone with the unsharded policy (before shard_model) and the others
                # wait for it without a deadline (a warm-up takes as long as it takes; torchrun ends every rank
                # if rank 0 dies), then read its artifacts
                _wait_for_rank0()
                if not main:
                    warmed.update(run_warmup(cfg, run_dir, (engine, prompt_fn, grader)))
            model.train()
            return warmed

        pipeline = build_reward_pipeline(cfg, BuildContext(tokenizer, run_dir, warmup))
        checkpointer = None
        if ctx is not None:
            from memrl.dist.checkpoint import DistCheckpointer
            from memrl.dist.runtime import build_mesh
            from memrl.dist.shard import shard_model

            mesh = build_mesh(cfg.dist, ctx)
            shard_model(model, mesh, cfg.dist)
            if ctx.world_size > 1 and hasattr(engine, "synced_gpus"):
                # from here every rank generates at once: ranks' sequences end at different lengths, and the
                # sharded forward passes must stay in step (not before: rank 0's warm-up generates alone)
                engine.synced_gpus = True
            if ref_model is not None:
                shard_model(ref_model, mesh, cfg.dist)
            checkpointer = DistCheckpointer(
                Path(run_dir.root) / "train",
                async_save=bool(cfg.trainer.checkpoint.async_save),
                keep=cfg.trainer.max_ckpt_to_keep,
                timeout_s=float(cfg.dist.timeout_s),
            )
        val_settings = EvalSettings(cfg, style, validation=True)

        def validate(step: int) -> dict[str, float]:
            metrics, _ = evaluate_problems(engine, tokenizer, val_problems, val_settings, grader, dist_ctx=ctx)
            out = {"val/greedy_acc": metrics["greedy_acc"]}
            if val_settings.n > 0:
                out[f"val/mean@{val_settings.n}"] = metrics[f"mean@{val_settings.n}"]
                out.update({f"val/pass@{k}": v for k, v in metrics["pass@k"].items()})
            log.info("validation at step %d: %s", step, out)
            return out

        trainer = Trainer(
            cfg,
            model,
            tokenizer,
            engine,
            pipeline,
            ground_truth,
            train_problems,
            prompt_fn,
            grader,
            Path(run_dir.root),
            ref_model=ref_model,
            validate=validate if val_problems else None,
            log_fn=tracker.log,
            dist_ctx=ctx,
            checkpointer=checkpointer,
        )
        resume = str(cfg.trainer.resume) == "auto"
        # refuses a run asked to stop before the step this directory has trained to (docs/run-directory.md)
        check_steps(run_dir, trainer.total_steps)
        finished = finished_summary(run_dir, trainer.total_steps) if resume else None
        if finished is not None:
            # a sweep run again skips its finished jobs (make reproduce is resumable)
            msg = f"{run_dir.root}: finished ({finished['steps']} steps, train/summary.json); nothing to do"
            log.info(msg)
            print(msg)
            tracker.finish()
            return finished
        resumed = (Path(run_dir.root) / "train" / "latest").exists() and resume
        # a finished run continued for more steps keeps its initial evaluation
        earlier = Path(run_dir.root) / "train" / "summary.json"
        carried = json.loads(earlier.read_text()).get("initial") if resumed and earlier.is_file() else None
        # run: the initial evaluation, training, the final evaluation. Distributed: the ranks split each
        # evaluation's batches, rank 0 gathers the samples and writes eval/ (the numbers are those of one process)
        initial = None
        if eval_sets and not resumed and cfg.trainer.initial_eval:
            log.info("evaluating the initial policy on %s", ", ".join(eval_sets))
            initial = evaluate_model(
                cfg,
                run_dir,
                model,
                tokenizer,
                model_path,
                eval_sets,
                tag="initial_",
                tracker=tracker,
                print_table=False,
                engine=engine,
                dist_ctx=ctx,
            )
            model.train()
        t0 = time.time()
        history = trainer.fit()
        train_seconds = time.time() - t0
        if history and main:
            plot_training_curves(
                history, trainer.train_dir / "curves.png", title=f"memrl train: {Path(model_path).name}"
            )
        final_checkpoint = {"step": trainer.step, "selected_by": "last"}
        evaluated = trainer.train_dir / "latest"
        best = trainer.best_val_checkpoint()
        if best is not None:
            if ctx is None:
                load_policy_weights(best, model)
            else:
                from memrl.dist.checkpoint import load_model

                load_model(best, model)
            trainer.engine.sync_weights(model)
            evaluated = best
            final_checkpoint = {"selected_by": BEST_VAL_KEY, **trainer.best_val}
            log.info("final policy: %s (best %s %.4f)", best.name, BEST_VAL_KEY, trainer.best_val["value"])
        final = None
        if eval_sets:
            final = evaluate_model(
                cfg,
                run_dir,
                model,
                tokenizer,
                str(evaluated),
                eval_sets,
                tag="final_",
                tracker=tracker,
                print_table=main,
                engine=engine,
                dist_ctx=ctx,
            )
    tracker.finish()
    # write the run directory: train/summary.json with the label accounting
    warmup = None
    if warmed:  # MemReward: the labels its warm-up read
        from memrl.memreward.artifacts import warmup_labels

        warmup = warmup_labels(run_dir)
    t = cfg.trainer
    val_ids = {p.id for p in val_problems} if (t.test_freq > 0 or t.val_before_train) else set()
    summary = {
        "steps": trainer.step,
        "train_seconds": round(train_seconds, 1),
        "labels": label_accounting(float(cfg.reward.label_ratio), len(labelled), ground_truth.reads, val_ids, warmup)
        # a diagnostic oracle arm (reward.memreward.reward_model=oracle_noise) read unlabelled queries too
        | ({"diagnostic_oracle_labels_read": len(ground_truth.oracle_reads)} if ground_truth.oracle_reads else {}),
        "initial": carried if initial is None else initial["overall"],
        "final": None if final is None else final["overall"],
        "last_step": history[-1] if history else None,
        "final_checkpoint": final_checkpoint,
    }
    if not main:
        return summary
    atomic_write_json(run_dir.path("train") / "summary.json", summary)
    if initial is not None and final is not None:
        a, b = initial["overall"].get("greedy_acc"), final["overall"].get("greedy_acc")
        msg = f"greedy accuracy on {', '.join(eval_sets)}: {100 * a:.1f}% before -> {100 * b:.1f}% after training"
        log.info(msg)
        print(msg)
    return summary
