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
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from memrl.errors import UserError
from memrl.run_dir import RunDir, check_steps

log = logging.getLogger(__name__)


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def compute_dtype(name: str, device: str) -> Any:
    """The autocast dtype of the forward passes: auto -> bfloat16 on a CUDA GPU that supports it, else None."""
    import torch

    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    table = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise UserError(f"unknown trainer.compute_dtype={name}; valid: auto, float32, bfloat16, float16")
    return table[name]


FINAL_CHECKPOINTS = ("last", "best_val")


def settings_from_config(cfg: DictConfig, device: str) -> Any:
    """The loop's `TrainSettings` from the `algo`, `trainer`, `rollout` and `reward` groups, validated."""
    from memrl.rl.trainer import TrainSettings

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
    from memrl.rl.core_algos import KL_TYPES, LOSS_AGG_MODES

    if str(a.loss_agg_mode) not in LOSS_AGG_MODES:
        raise UserError(f"unknown algo.loss_agg_mode={a.loss_agg_mode}; valid: {', '.join(LOSS_AGG_MODES)}")
    if str(a.kl_loss_type) not in KL_TYPES:
        raise UserError(f"unknown algo.kl_loss_type={a.kl_loss_type}; valid: {', '.join(KL_TYPES)}")
    if str(t.final_checkpoint) not in FINAL_CHECKPOINTS:
        raise UserError(f"unknown trainer.final_checkpoint={t.final_checkpoint}; valid: {', '.join(FINAL_CHECKPOINTS)}")
    if str(t.final_checkpoint) == "best_val" and (int(t.test_freq) <= 0 or cfg.data.val_set is None):
        raise UserError(
            "trainer.final_checkpoint=best_val picks the best validation step: it needs trainer.test_freq > 0 "
            f"(got {t.test_freq}) and a data.val_set"
        )
    kl_coef = float(a.kl_loss_coef) if a.use_kl_loss else 0.0
    if kl_coef < 0:
        raise UserError(f"algo.kl_loss_coef must be >= 0, got {a.kl_loss_coef}")
    return TrainSettings(
        total_steps=int(t.total_steps),
        total_epochs=None if t.total_epochs is None else float(t.total_epochs),
        train_batch_size=int(t.train_batch_size),
        gen_batch_size=int(t.gen_batch_size or t.train_batch_size),
        ppo_mini_batch_size=int(t.ppo_mini_batch_size),
        ppo_epochs=int(t.ppo_epochs),
        micro_batch_size=int(t.micro_batch_size),
        n=int(r.n),
        temperature=float(r.temperature),
        top_p=float(r.top_p),
        top_k=int(r.top_k),
        max_new_tokens=int(r.max_new_tokens),
        stop=tuple(r.stop),
        norm_adv_by_std=bool(a.norm_adv_by_std_in_grpo),
        use_entropy_advantage=bool(a.use_entropy_advantage),
        entropy_advantage_coef=float(a.entropy_advantage_coef),
        entropy_advantage_cap_ratio=float(a.entropy_advantage_cap_ratio),
        clip_ratio_low=float(a.clip_ratio_low),
        clip_ratio_high=float(a.clip_ratio_high),
        clip_ratio_c=None if a.clip_ratio_c is None else float(a.clip_ratio_c),
        loss_agg_mode=str(_value(a.loss_agg_mode)),
        kl_loss_coef=kl_coef,
        kl_loss_type=str(_value(a.kl_loss_type)),
        entropy_coeff=float(a.entropy_coeff),
        filter_groups=bool(a.filter_groups.enable),
        max_num_gen_batches=int(a.filter_groups.max_num_gen_batches),
        mask_truncated=bool(a.mask_truncated_completions),
        lr=float(t.lr),
        lr_warmup_steps=int(t.lr_warmup_steps),
        weight_decay=float(t.weight_decay),
        betas=tuple(float(b) for b in t.betas),
        grad_clip=float(t.grad_clip),
        compute_dtype=compute_dtype(str(t.compute_dtype), device),
        test_freq=int(t.test_freq),
        val_before_train=bool(t.val_before_train),
        save_freq=int(t.save_freq),
        max_ckpt_to_keep=None if t.max_ckpt_to_keep is None else int(t.max_ckpt_to_keep),
        keep_best_val=str(t.final_checkpoint) == "best_val",
        resume=str(t.resume),
        progress=bool(t.progress),
        seed=int(cfg.seed),
    )


REWARD_NAMES = ("oracle", "partial", "memreward")


def build_reward_pipeline(cfg: DictConfig, memreward: Any = None, tokenizer: Any = None) -> Any:
    """The reward components named by `reward.name`, plus the overlong penalty and MEDS when enabled.

    Args:
        memreward: the online MemReward component (`memrl.stages.memreward.memreward_component`), needed
            when reward.name is memreward.
        tokenizer: the policy's tokenizer, needed when meds.enable (its anchor search).
    """
    from memrl.rewards.base import RewardPipeline
    from memrl.rewards.oracle import GroundTruthReward, OverlongPenalty

    name = str(cfg.reward.name)
    if name not in REWARD_NAMES:
        raise UserError(f"unknown reward.name={name}; valid: {', '.join(REWARD_NAMES)}")
    components = [GroundTruthReward()]
    if name == "memreward":
        if memreward is None:
            raise ValueError("reward=memreward needs its online component")
        components.append(memreward)
    ob = cfg.reward.overlong_buffer
    if ob.enable:
        if int(ob.len) <= 0 or int(ob.len) > int(cfg.rollout.max_new_tokens):
            raise UserError(
                f"reward.overlong_buffer.len must be in 1..rollout.max_new_tokens ({cfg.rollout.max_new_tokens}), "
                f"got {ob.len}"
            )
        components.append(OverlongPenalty(int(ob.len), float(ob.penalty_factor)))
    if cfg.meds.enable:
        from memrl.rewards.meds import meds_component

        if tokenizer is None:
            raise ValueError("meds.enable needs the policy's tokenizer")
        formats = tuple(str(_value(f)) for f in cfg.grading.answer_formats)
        components.append(meds_component(cfg.meds, tokenizer, formats))
    return RewardPipeline(components)


def label_ratio(cfg: DictConfig) -> float:
    """oracle labels everything; partial labels `reward.label_ratio` of the training queries."""
    ratio = float(cfg.reward.label_ratio)
    if not 0.0 < ratio <= 1.0:
        raise UserError(f"reward.label_ratio must be in (0, 1], got {ratio}")
    if str(cfg.reward.name) == "oracle" and ratio != 1.0:
        raise UserError("reward=oracle labels every query; for fewer labels use reward=partial reward.label_ratio=...")
    return ratio


def label_accounting(
    ratio: float, n_labelled: int, train_reads: set[str], val_ids: set[str], warmup: dict[str, Any] | None
) -> dict[str, Any]:
    """Every ground-truth label a run consumed, counted once per query.

    Args:
        ratio / n_labelled: the run's label budget (reward.label_ratio) and its labelled training queries.
        train_reads: training queries whose label the RL reward path read.
        val_ids: validation queries whose labels periodic validation read (empty without validation).
        warmup: MemReward's warm-up labels (`memrl.stages.memreward.warmup_labels`): the labelled queries of
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
    from memrl.rl.checkpoint import latest_checkpoint

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


def load_training_data(cfg: DictConfig) -> tuple[list[Any], list[Any], Any]:
    """The training problems, the validation problems (capped by trainer.val_limit) and the label store."""
    from memrl.data.loaders import load_problems
    from memrl.rewards.labels import GroundTruth, nested_labelled_ids

    if cfg.data.train_set is None:
        raise UserError(
            "this data config has no training set (data.train_set); use data=synthetic, gsm8k_rl or math_rl, "
            "or give one: data.train_set={name: mine, source: local, path: train.jsonl, split: train}"
        )
    data_dir = Path(cfg.paths.data_dir)
    train_problems = load_problems(cfg.data.train_set, data_dir, cfg.data.synthetic)
    val_problems = load_problems(cfg.data.val_set, data_dir, cfg.data.synthetic) if cfg.data.val_set else []
    if cfg.trainer.val_limit is not None:
        val_problems = val_problems[: int(cfg.trainer.val_limit)]
    labelled = nested_labelled_ids([p.id for p in train_problems], label_ratio(cfg), int(cfg.reward.label_seed))
    log.info(
        "training queries: %d, labelled: %d (label_ratio %.2f); validation queries: %d",
        len(train_problems),
        len(labelled),
        float(cfg.reward.label_ratio),
        len(val_problems),
    )
    return train_problems, val_problems, GroundTruth(train_problems, labelled)


def run(cfg: DictConfig, run_dir: RunDir) -> dict[str, Any]:
    """Train as configured; returns the final evaluation (or the last step's metrics)."""
    from memrl.data.loaders import load_eval_sets
    from memrl.data.templates import format_prompt, resolve_style
    from memrl.eval.runner import EvalSettings, evaluate_problems
    from memrl.policy.load import load_policy
    from memrl.rl.trainer import BEST_VAL_KEY, Trainer
    from memrl.stages.evaluate import build_engine, build_grader, evaluate_model, seed_everything
    from memrl.tracking import build_tracker

    seed_everything(int(cfg.seed))
    if str(cfg.reward.name) == "memreward":
        from memrl.stages.memreward import check_memreward_config

        check_memreward_config(cfg)
    train_problems, val_problems, ground_truth = load_training_data(cfg)
    labelled = ground_truth.labelled_ids

    # parameters and optimiser stay float32 (lr 1e-6 updates vanish in bf16); the forward passes autocast
    model_cfg = copy.deepcopy(cfg.model)
    if str(model_cfg.dtype) == "auto":
        OmegaConf.set_struct(model_cfg, False)
        model_cfg.dtype = "float32"
    model, tokenizer, model_path = load_policy(model_cfg, cfg.paths.cache_dir)
    device = str(next(model.parameters()).device)
    settings = settings_from_config(cfg, device)
    if cfg.trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    ref_model = None
    if settings.kl_loss_coef > 0:
        ref_model = copy.deepcopy(model).eval()
        ref_model.requires_grad_(False)
        log.info("reference model loaded for the KL term (coef %g, %s)", settings.kl_loss_coef, settings.kl_loss_type)

    style = resolve_style(cfg.model.prompt_style, tokenizer)
    answer_format = str(_value(cfg.data.answer_format))

    def prompt_fn(p: Any) -> str:
        return format_prompt(p, tokenizer, style, answer_format, cfg.model.system_prompt)

    engine = build_engine(cfg.rollout, model, tokenizer)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tracker = build_tracker(cfg.logger, str(run_dir.root), config, name=f"train-{Path(run_dir.root).name}")
    eval_sets = (
        load_eval_sets(cfg.data.eval_sets, Path(cfg.paths.data_dir), cfg.data.synthetic, limit=cfg.eval.limit)
        if cfg.trainer.final_eval and cfg.data.eval_sets
        else {}
    )

    with build_grader(cfg) as grader:
        memreward = None
        if str(cfg.reward.name) == "memreward":
            from memrl.stages.memreward import memreward_component

            # the warm-up rolls out the initial policy: before any update (skipped when its artifacts exist)
            memreward = memreward_component(cfg, run_dir, (engine, prompt_fn, grader))
            model.train()
        pipeline = build_reward_pipeline(cfg, memreward, tokenizer)
        val_settings = EvalSettings(
            greedy=True,
            n=int(cfg.trainer.val_n),
            ks=tuple(k for k in (1, 2, 4, 8, 16, 32, 64) if k <= int(cfg.trainer.val_n)),
            temperature=float(cfg.eval.temperature),
            top_p=float(cfg.eval.top_p),
            max_new_tokens=int(cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens),
            stop=tuple(cfg.rollout.stop),
            prompt_style=style,
            answer_format=answer_format,
            system_prompt=cfg.model.system_prompt,
            seed=int(cfg.seed),
        )

        def validate(step: int) -> dict[str, float]:
            metrics, _ = evaluate_problems(engine, tokenizer, val_problems, val_settings, grader)
            out = {"val/greedy_acc": metrics["greedy_acc"]}
            if val_settings.n > 0:
                out[f"val/mean@{val_settings.n}"] = metrics[f"mean@{val_settings.n}"]
                out.update({f"val/pass@{k}": v for k, v in metrics["pass@k"].items()})
            log.info("validation at step %d: %s", step, out)
            return out

        trainer = Trainer(
            settings,
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
        )
        # refuses a run asked to stop before the step this directory has trained to (docs/run-directory.md)
        check_steps(run_dir, trainer.s.total_steps)
        finished = finished_summary(run_dir, trainer.s.total_steps) if settings.resume == "auto" else None
        if finished is not None:
            # a sweep run again skips its finished jobs (make reproduce is resumable)
            msg = f"{run_dir.root}: finished ({finished['steps']} steps, train/summary.json); nothing to do"
            log.info(msg)
            print(msg)
            tracker.finish()
            return finished
        resumed = (Path(run_dir.root) / "train" / "latest").exists() and settings.resume == "auto"
        # a finished run continued for more steps keeps its initial evaluation
        earlier = Path(run_dir.root) / "train" / "summary.json"
        carried = json.loads(earlier.read_text()).get("initial") if resumed and earlier.is_file() else None
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
            )
            model.train()
        t0 = time.time()
        history = trainer.fit()
        train_seconds = time.time() - t0
        if history:
            from memrl.rl.plots import plot_training_curves

            plot_training_curves(
                history, trainer.train_dir / "curves.png", title=f"memrl train: {Path(model_path).name}"
            )
        final_checkpoint = {"step": trainer.step, "selected_by": "last"}
        evaluated = trainer.train_dir / "latest"
        best = trainer.best_val_checkpoint()
        if best is not None:
            from memrl.rl.checkpoint import load_policy_weights

            load_policy_weights(best, model)
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
                engine=engine,
            )
    tracker.finish()
    val_ids = {p.id for p in val_problems} if (settings.test_freq > 0 or settings.val_before_train) else set()
    warmup = None
    if str(cfg.reward.name) == "memreward":
        from memrl.stages.memreward import warmup_labels

        warmup = warmup_labels(run_dir)
    summary = {
        "steps": trainer.step,
        "train_seconds": round(train_seconds, 1),
        "labels": label_accounting(float(cfg.reward.label_ratio), len(labelled), ground_truth.reads, val_ids, warmup),
        "initial": carried if initial is None else initial["overall"],
        "final": None if final is None else final["overall"],
        "last_step": history[-1] if history else None,
        "final_checkpoint": final_checkpoint,
    }
    from memrl.utils.io import atomic_write_json

    atomic_write_json(run_dir.path("train") / "summary.json", summary)
    if initial is not None and final is not None:
        a, b = initial["overall"].get("greedy_acc"), final["overall"].get("greedy_acc")
        msg = f"greedy accuracy on {', '.join(eval_sets)}: {100 * a:.1f}% before -> {100 * b:.1f}% after training"
        log.info(msg)
        print(msg)
    return summary
