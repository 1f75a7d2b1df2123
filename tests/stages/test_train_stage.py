"""`memrl train` config checks: user mistakes become one clear error naming the key and the valid values."""

from __future__ import annotations

import pytest

from memrl.errors import UserError
from memrl.rewards.registry import BuildContext, build_reward_pipeline
from memrl.stages.common import label_ratio
from memrl.stages.train import check_config


def test_the_presets_compose(compose_eval):
    cfg = compose_eval(config_name="train")
    assert cfg.hydra.runtime.choices.algo == "dapo"
    check_config(cfg)
    a = cfg.algo
    assert (a.adv_estimator, a.policy_loss, a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c) == (
        "grpo",
        "vanilla",
        0.2,
        0.28,
        10.0,
    )
    assert a.filter_groups.enable and a.loss_agg_mode == "token-mean" and not a.use_kl_loss
    g = compose_eval("algo=grpo", config_name="train")
    check_config(g)
    assert g.algo.kl_loss_coef == 0.001 and g.algo.loss_agg_mode == "seq-mean-token-mean"
    assert g.algo.use_kl_loss and not g.algo.filter_groups.enable
    from memrl.rl.trainer import kl_coef

    assert kl_coef(g.algo) == 0.001
    assert kl_coef(compose_eval("algo=grpo", "algo.use_kl_loss=false", config_name="train").algo) == 0.0
    assert compose_eval("algo=grpo_entropy", config_name="train").algo.adv_estimator == "grpo_entropy"


@pytest.mark.parametrize(
    "override,message",
    [
        ("algo.loss_agg_mode=mean", "valid: token-mean, seq-mean-token-mean"),
        (
            "algo.kl_loss_type=k4",
            "unknown algo.kl_loss_type=k4; registered KL estimators: low_var_kl, kl, mse, abs, k1",
        ),
        ("algo.adv_estimator=ppo", "unknown algo.adv_estimator=ppo; registered advantage estimators: grpo, dr_grpo"),
        ("algo.policy_loss=gspo", "unknown algo.policy_loss=gspo; registered policy losses: vanilla"),
        ("reward.name=magic", "unknown reward.name=magic; registered rewards: oracle, partial, memreward"),
        ("reward.shapers=[overlong,bonus]", "unknown reward.shapers=bonus; registered reward shapers: overlong, meds"),
        ("algo.filter_groups.metric=score", "binary outcome"),
        ("trainer.ppo_mini_batch_size=5", "multiple of trainer.ppo_mini_batch_size"),
        ("trainer.compute_dtype=fp8", "valid: auto, float32, bfloat16, float16"),
        ("trainer.final_checkpoint=best", "valid: last, best_val"),
        ("trainer.final_checkpoint=best_val trainer.test_freq=0", "needs trainer.test_freq > 0"),
        ("reward.overlong_buffer.enable=true reward.overlong_buffer.len=0", "reward.overlong_buffer.len must be"),
    ],
)
def test_bad_settings_name_the_key(compose_eval, override, message):
    with pytest.raises(UserError, match=message):
        check_config(compose_eval(*override.split(), config_name="train"))


def test_reward_choices(compose_eval):
    def names(*overrides):
        return [c.name for c in build_reward_pipeline(compose_eval(*overrides, config_name="train")).components]

    assert names() == ["ground_truth"]
    assert names("reward.overlong_buffer.enable=true") == ["ground_truth", "overlong"]
    # a shaper left out of reward.shapers is off whatever its own group says
    assert names("reward.overlong_buffer.enable=true", "reward.shapers=[meds]") == ["ground_truth"]
    with pytest.raises(ValueError, match="warm-up"):
        build_reward_pipeline(compose_eval("reward=memreward", config_name="train"), BuildContext())
    with pytest.raises(UserError, match="reward=partial"):
        label_ratio(compose_eval("reward.label_ratio=0.5", config_name="train"))
    assert label_ratio(compose_eval("reward=partial", config_name="train")) == 0.2


def test_label_accounting_counts_each_query_once():
    from memrl.stages.train import label_accounting

    # RL read a, b; the warm-up memory holds b, c; GNN validation q1, q2 overlap periodic validation q2, q3
    warmup = {"labelled_ids": ["b", "c"], "extra_validation_ids": ["q1", "q2"]}
    out = label_accounting(0.2, 3, {"a", "b"}, {"q2", "q3"}, warmup)
    assert out["train_labels_read"] == 3
    assert out["validation_labels_used"] == 3
    assert out["gnn_validation_labels"] == 2
    assert out["total_labels_consumed"] == 6
    plain = label_accounting(1.0, 10, {"a"}, set(), None)
    assert plain["total_labels_consumed"] == 1 and plain["gnn_validation_labels"] == 0


def test_memreward_config_errors_name_the_key(compose_eval):
    from memrl.rewards.memreward import check_memreward_config

    for override, key in [
        ("reward.memreward.direction=sideways", "reward.memreward.direction"),
        ("reward.memreward.reward_mode=fuzzy", "reward.memreward.reward_mode"),
        ("reward.memreward.gnn.select_by=luck", "reward.memreward.gnn.select_by"),
        ("reward.memreward.abstain_band=[0.7,0.3]", "reward.memreward.abstain_band"),
    ]:
        with pytest.raises(UserError, match=key):
            check_memreward_config(compose_eval("reward=memreward", override, config_name="train"))


def test_final_evaluation_tests_the_best_validation_checkpoint(tiny_model_dir, tmp_path):
    """trainer.final_checkpoint=best_val: the final evaluation loads the first step with the best validation
    accuracy (MemReward's checkpoint selection) and the summary says which.

    The validation runs for real, but its greedy accuracy is replaced by a script (0.2, 0.6, 0.6), so the
    best step is the middle one whatever the trajectory: neither the first nor the last, and the first of
    two equals."""
    import json
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    args = [
        "trainer.total_steps=3",
        "trainer.test_freq=1",
        "trainer.final_checkpoint=best_val",
        "trainer.max_ckpt_to_keep=1",
        "trainer.train_batch_size=4",
        "trainer.gen_batch_size=4",
        "trainer.ppo_mini_batch_size=4",
        "trainer.val_limit=20",
        "trainer.val_n=0",
        "trainer.initial_eval=false",
        "trainer.progress=false",
        "eval.limit=8",
        "eval.n=0",
        "rollout.n=4",
        "rollout.max_new_tokens=40",
        f"hydra.run.dir={run}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    scripted = (
        "from memrl.rl.trainer import Trainer\n"
        "real = Trainer._validate\n"
        "acc = {1: 0.2, 2: 0.6, 3: 0.6}\n"
        "Trainer._validate = lambda self, step: {**real(self, step), 'val/greedy_acc': acc[step]}\n"
        "from memrl.cli import main\n"
        "main()\n"
    )
    cmd = [sys.executable, "-c", scripted, "train", *args]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    rows = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val/greedy_acc"] for r in rows] == [0.2, 0.6, 0.6]
    best_step = 2
    summary = json.loads((run / "train" / "summary.json").read_text())
    assert summary["final_checkpoint"] == {"step": 2, "selected_by": "val/greedy_acc", "value": 0.6}
    # max_ckpt_to_keep=1 keeps the last checkpoint and the protected best one; step 1 is pruned
    assert not (run / "train" / "global_step_1").exists() and (run / "train" / "global_step_3").is_dir()
    results = json.loads(next((run / "eval").glob("results_final_*.json")).read_text())
    assert results["model"].endswith(f"global_step_{best_step}")
    assert (run / "train" / f"global_step_{best_step}" / "trainer_state.json").is_file()


def test_a_run_directory_is_reused_only_by_the_config_that_built_it(tiny_model_dir, tmp_path):
    """memrl train in an existing run directory: another result-changing key is refused, naming it, and the
    directory is left as it was; more steps continue the finished run; fewer are refused; --force starts over."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    run = tmp_path / "run"
    args = [
        "trainer.train_batch_size=2",
        "trainer.gen_batch_size=2",
        "trainer.ppo_mini_batch_size=2",
        "trainer.test_freq=0",
        "trainer.final_eval=false",
        "trainer.progress=false",
        "algo.filter_groups.enable=false",
        "rollout.n=2",
        "rollout.max_new_tokens=8",
        "grading.num_workers=0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

    def train(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", "from memrl.cli import main; main()", "train", *args, *extra]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    def steps() -> list[int]:
        return [json.loads(line)["step"] for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]

    assert train("trainer.total_steps=1", f"hydra.run.dir={run}").returncode == 0
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    manifest = (run / "manifest.json").read_text()

    refused = train("trainer.total_steps=1", "trainer.lr=3e-3", f"hydra.run.dir={run}")
    assert refused.returncode == 2
    assert "trainer.lr: 0.0001 -> 0.003" in refused.stderr and "--force" in refused.stderr
    # the results stay listed under the overrides that produced them
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides
    assert (run / "manifest.json").read_text() == manifest
    assert steps() == [1]

    # an excluded key (the step count): the finished run continues from its checkpoint
    assert train("--resume", str(run), "trainer.total_steps=2", "trainer.save_freq=1").returncode == 0
    assert steps() == [1, 2]
    assert "trainer.total_steps=2" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    fewer = train("--resume", str(run), "trainer.total_steps=1")
    assert fewer.returncode == 2 and "trained 2 steps" in fewer.stderr

    assert train("--resume", str(run), "trainer.total_steps=1", "trainer.lr=3e-3", "--force").returncode == 0
    assert steps() == [1]
    record = json.loads((run / "train" / "built_with.json").read_text())
    assert record["config"]["trainer.lr"] == 0.003
