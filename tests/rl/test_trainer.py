"""The training loop: updates move the policy the right way, dynamic sampling, label honesty, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from memrl.config.schema import train_config
from memrl.data.labels import GroundTruth, UnlabelledAccessError, nested_labelled_ids
from memrl.data.problem import Problem
from memrl.data.templates import format_prompt
from memrl.grading import Grader
from memrl.rewards.base import Group, RewardComponent, RewardPipeline
from memrl.rewards.oracle import GroundTruthReward
from memrl.rl.trainer import Trainer
from memrl.rollout.hf_engine import HFEngine
from memrl.rollout.records import Rollout


class ScriptedEngine:
    """Rollouts chosen by a function of (problem index, sample index): fully controlled outcomes."""

    def __init__(self, tokenizer, problems, answer_fn):
        self.tok = tokenizer
        self.index = {format_prompt(p): i for i, p in enumerate(problems)}
        self.problems = problems
        self.answer_fn = answer_fn
        self.calls = 0

    def sync_weights(self, model):
        pass

    def sleep(self):

        pass

    def generate(self, prompts, params, progress=None):
        self.calls += 1
        out = []
        for pi, prompt in enumerate(prompts):
            i = self.index[prompt]
            group = []
            for j in range(params.n):
                text = f"Careful: \\boxed{{{self.answer_fn(i, j, self.problems[i])}}}"
                ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                p_ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
                group.append(Rollout(pi, j, prompt, text, ids, p_ids, "stop"))
            out.append(group)
        return out


def make_trainer(policy, problems, tmp_path, *overrides, engine=None, labelled=None, components=None, validate=None):
    """A Trainer on the schema's defaults, a small batch, and `overrides` ("algo.clip_ratio_high=0.28")."""
    model, tok = policy
    cfg = train_config(
        "trainer.total_steps=2",
        "trainer.train_batch_size=4",
        "trainer.gen_batch_size=4",
        "trainer.ppo_mini_batch_size=4",
        "rollout.n=4",
        "rollout.max_new_tokens=24",
        "trainer.lr=1e-3",
        "trainer.progress=false",
        "trainer.resume=disable",
        *overrides,
    )
    gt = GroundTruth(problems, labelled if labelled is not None else {p.id for p in problems})
    return Trainer(
        cfg,
        model,
        tok,
        engine or HFEngine(model, tok),
        RewardPipeline(components or [GroundTruthReward()]),
        gt,
        problems,
        format_prompt,
        Grader(num_workers=0),
        tmp_path,
        validate=validate,
    )


def test_steps_change_parameters_and_raise_rewarded_log_probs(policy, synthetic_train, tmp_path):
    """A fixed batch with fixed old log-probs: repeated updates lower the surrogate loss and move the policy
    towards the rewarded completions."""
    problems = synthetic_train[:4]
    # sample 0 and 1 of every group are right, 2 and 3 wrong
    engine = ScriptedEngine(policy[1], problems, lambda i, j, p: p.answer if j < 2 else int(p.answer) + 1)
    tr = make_trainer(
        policy,
        problems,
        tmp_path,
        "algo.clip_ratio_low=10.0",
        "algo.clip_ratio_high=10.0",
        "trainer.lr=1e-4",
        engine=engine,
    )
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    timing = dict.fromkeys(("gen", "reward"), 0.0)
    groups, _, _ = tr.collect_groups(timing)
    assert [g.outcome for g in groups] == [[1.0, 1.0, 0.0, 0.0]] * 4
    from memrl.rl.batch import build_batch
    from memrl.rl.core_algos import grpo_advantages

    rollouts = [r for g in groups for r in g.rollouts]
    gids = [i for i, g in enumerate(groups) for _ in g.rollouts]
    batch = build_batch(rollouts, gids, [s for g in groups for s in g.score], tr.tokenizer.pad_token_id)
    batch.old_log_prob, _ = tr._score(tr.model, batch, None)
    adv = grpo_advantages(batch.scores, gids)
    batch.advantages = adv.unsqueeze(1) * batch.response_mask
    losses = [tr._update(batch, groups, 1)["actor/pg_loss"] for _ in range(8)]
    assert losses[-1] < losses[0] - 1e-3
    after, _ = tr._score(tr.model, batch, None)
    seq = ((after - batch.old_log_prob) * batch.response_mask).sum(1)
    # within every group, the right completions gained log-probability relative to the wrong ones
    # (completions share a prefix, so absolute changes can go either way)
    for g in range(4):
        rows = torch.arange(4 * g, 4 * g + 4)
        assert seq[rows][adv[rows] > 0].min() > seq[rows][adv[rows] < 0].max()
    assert seq[adv > 0].mean() > 0
    changed = [k for k, v in tr.model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > 10


def test_dynamic_sampling_keeps_mixed_groups_and_refills(policy, synthetic_train, tmp_path):
    problems = synthetic_train[:12]

    # problems 0-3 all right, 4-7 all wrong, 8-11 mixed; the sampler walks a permutation of 12
    def answer(i, j, p):
        if i < 4 or (i >= 8 and j == 0):
            return p.answer
        return int(p.answer) + 1

    engine = ScriptedEngine(policy[1], problems, answer)
    tr = make_trainer(
        policy,
        problems,
        tmp_path,
        "algo.filter_groups.enable=true",
        "algo.filter_groups.max_num_gen_batches=10",
        engine=engine,
    )
    result = tr.train_step()
    assert len(result.trained_groups) == 4
    assert all(0 < sum(g.outcome) < len(g.outcome) for g in result.trained_groups)
    assert {int(g.problem.id.split("-")[-1]) for g in result.trained_groups} <= {
        int(p.id.split("-")[-1]) for p in problems[8:]
    }
    # the 4 mixed prompts of 12 are found after 2 or 3 batches of 4 (one permutation covers every prompt)
    assert result.metrics["batch/num_gen_batches"] == engine.calls >= 2
    assert result.metrics["batch/trained_groups"] == 4


def test_dynamic_sampling_stops_at_max_num_gen_batches(policy, synthetic_train, tmp_path):
    problems = synthetic_train[:8]
    engine = ScriptedEngine(policy[1], problems, lambda i, j, p: p.answer)  # never mixed
    tr = make_trainer(
        policy,
        problems,
        tmp_path,
        "algo.filter_groups.enable=true",
        "algo.filter_groups.max_num_gen_batches=3",
        engine=engine,
    )
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    result = tr.train_step()
    assert engine.calls == 3 and result.trained_groups == []
    assert all(torch.equal(v, before[k]) for k, v in tr.model.state_dict().items())


class Tripwire(str):
    """A gold answer that must never be read: any use of it as a string raises."""

    def _boom(self, *a, **k):
        raise AssertionError("the ground truth of an unlabelled query was read")

    __str__ = __eq__ = __hash__ = __len__ = __iter__ = __getitem__ = strip = split = _boom  # noqa: E731


class JudgesEverything(RewardComponent):
    """A stand-in reward model for unlabelled queries (what MemReward will be): outcome from the text."""

    name = "stand_in"
    trains_on_unlabelled = True

    def score(self, groups, ctx):
        for g in groups:
            for i, r in enumerate(g.rollouts):
                if g.outcome[i] is None:
                    assert g.problem.answer is None  # components see problems without answers
                    g.outcome[i] = float(r.sample_index == 0)
                    g.score[i] += g.outcome[i]


def test_reward_path_never_reads_unlabelled_ground_truth(policy, synthetic_train, tmp_path):
    problems = list(synthetic_train[:16])
    labelled = nested_labelled_ids([p.id for p in problems], 0.5, seed=0)
    assert len(labelled) == 8
    armed = {"on": True}

    class Guarded(Tripwire):
        pass

    def guard(p):
        return p if p.id in labelled else dataclasses.replace(p, answer=Guarded(p.answer))

    guarded = [guard(p) for p in problems]
    engine = ScriptedEngine(policy[1], problems, lambda i, j, p: p.answer if j == 0 else 0)

    tr = make_trainer(
        policy,
        guarded,
        tmp_path,
        "trainer.train_batch_size=8",
        "trainer.gen_batch_size=8",
        "trainer.ppo_mini_batch_size=8",
        engine=engine,
        labelled=labelled,
        components=[GroundTruthReward(), JudgesEverything()],
    )
    # metrics may read the truth of unlabelled queries, but only outside the reward path
    real_metrics_answer = tr.gt.metrics_answer
    tr.gt.metrics_answer = lambda pid: str.__str__(real_metrics_answer(pid)) if not armed["on"] else Tripwire._boom()
    original_score = tr.pipeline.score

    def score_then_disarm(groups, ctx):
        armed["on"] = True
        original_score(groups, ctx)
        armed["on"] = False

    tr.pipeline.score = score_then_disarm
    seen_unlabelled = 0
    for _ in range(3):
        armed["on"] = True
        result = tr.train_step()
        seen_unlabelled += sum(not g.labelled for g in result.trained_groups)
        assert "metrics_only/acc_unlabelled" in result.metrics
    assert seen_unlabelled > 0  # unlabelled queries really went through the reward path
    assert tr.gt.reads <= labelled
    # the diagnostic oracle arm is the one reward that reads unlabelled truth; it is tested apart, below
    assert tr.gt.oracle_reads == set()
    with pytest.raises(UnlabelledAccessError):
        tr.gt.labelled_answer(next(p.id for p in problems if p.id not in labelled))


def test_partial_rewards_train_only_on_labelled_queries(policy, synthetic_train, tmp_path):
    problems = list(synthetic_train[:16])
    labelled = nested_labelled_ids([p.id for p in problems], 0.25, seed=1)
    tr = make_trainer(policy, problems, tmp_path, labelled=labelled)
    assert {p.id for p in tr.problems} == labelled
    result = tr.train_step()
    assert all(g.labelled for g in result.trained_groups)


def test_resume_refuses_another_label_split(policy, synthetic_train, tmp_path):
    from memrl.errors import UserError

    problems = list(synthetic_train[:16])
    first = nested_labelled_ids([p.id for p in problems], 0.25, seed=1)
    tr = make_trainer(policy, problems, tmp_path, labelled=first)
    tr.save()
    same = make_trainer(policy, problems, tmp_path, "trainer.resume=auto", labelled=first)
    same._maybe_resume()
    assert same.step == 0
    other = make_trainer(
        policy,
        problems,
        tmp_path,
        "trainer.resume=auto",
        labelled=nested_labelled_ids([p.id for p in problems], 0.25, seed=2),
    )
    with pytest.raises(UserError, match="another label split"):
        other._maybe_resume()


def test_total_epochs_sets_steps_from_the_training_pool(policy, synthetic_train, tmp_path):
    """An epoch budget gives a label-limited run proportionally fewer steps (the pool is its labelled queries)."""
    from memrl.rl.trainer import steps_for_epochs

    assert [steps_for_epochs(e, n, b) for e, n, b in [(1, 16, 4), (1.5, 16, 4), (1, 3, 4), (0.01, 16, 4)]] == [
        4,
        6,
        1,
        1,
    ]
    problems = list(synthetic_train[:16])
    oracle = make_trainer(policy, problems, tmp_path / "o", "trainer.total_epochs=2.0")
    labelled = nested_labelled_ids([p.id for p in problems], 0.25, seed=1)
    partial = make_trainer(policy, problems, tmp_path / "p", "trainer.total_epochs=2.0", labelled=labelled)
    assert (oracle.total_steps, partial.total_steps) == (8, 2)
    with pytest.raises(ValueError, match="total_epochs"):
        make_trainer(policy, problems, tmp_path / "z", "trainer.total_epochs=0.0")


def test_nested_label_split():
    ids = [f"q{i}" for i in range(200)]
    sets = [nested_labelled_ids(ids, r, seed=3) for r in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)]
    assert [len(s) for s in sets] == [20, 40, 60, 100, 140, 200]
    assert all(a <= b for a, b in zip(sets, sets[1:]))
    assert nested_labelled_ids(ids, 0.2, seed=4) != sets[1]


def test_group_defaults():
    g = Group(problem=Problem("x", "q", None), prompt="p", rollouts=[None, None], labelled=False)  # type: ignore[list-item]
    assert g.outcome == [None, None] and g.score == [0.0, 0.0] and not g.judged


def test_best_validation_checkpoint_is_kept_and_survives_resume(policy, synthetic_train, tmp_path):
    """keep_best_val: the first step with the best val/greedy_acc is checkpointed, kept past max_ckpt_to_keep,
    and remembered by every later checkpoint, so a resumed run still knows it."""
    import json

    from memrl.rl import checkpoint as ckpt

    scripted = {1: 0.2, 2: 0.6, 3: 0.4, 4: 0.6, 5: 0.1}

    def validate(step):
        return {"val/greedy_acc": scripted[step]}

    problems = synthetic_train[:4]
    common = ("trainer.total_steps=4", "trainer.test_freq=1", "trainer.max_ckpt_to_keep=1")
    best = "trainer.final_checkpoint=best_val"
    tr = make_trainer(policy, problems, tmp_path, *common, best, validate=validate)
    tr.fit()
    assert tr.best_val == {"step": 2, "value": 0.6}  # step 4 ties: the first of equals wins
    assert ckpt.list_checkpoints(tr.train_dir) == [2, 4]  # 1 and 3 pruned, 2 protected
    assert tr.best_val_checkpoint() == tr.train_dir / "global_step_2"
    state = json.loads((tr.train_dir / "global_step_4" / "trainer_state.json").read_text())
    assert state["best_val"] == {"step": 2, "value": 0.6}
    from safetensors.torch import load_file

    w2 = load_file(str(tr.train_dir / "global_step_2" / "policy" / "model.safetensors"))
    w4 = load_file(str(tr.train_dir / "global_step_4" / "policy" / "model.safetensors"))
    assert any(not torch.equal(w2[k], w4[k]) for k in w2)  # two different policies were kept

    resumed = make_trainer(
        policy, problems, tmp_path, *common, best, "trainer.total_steps=5", "trainer.resume=auto", validate=validate
    )
    resumed.fit()
    assert resumed.step == 5 and resumed.best_val == {"step": 2, "value": 0.6}
    assert ckpt.list_checkpoints(resumed.train_dir) == [2, 5]

    plain = make_trainer(policy, problems, tmp_path / "plain", *common, validate=validate)
    plain.fit()
    assert plain.best_val is None and ckpt.list_checkpoints(plain.train_dir) == [4]


def test_oracle_arm_reads_unlabelled_truth_only_through_the_oracle_door(policy, synthetic_train, tmp_path):
    """The diagnostic control reward.memreward.reward_model=oracle_noise, excluded by design from the honesty
    test above: its reads of unlabelled queries go through `oracle_answer` and are counted apart."""
    from memrl.rewards.oracle import OracleNoiseReward

    problems = list(synthetic_train[:16])
    labelled = nested_labelled_ids([p.id for p in problems], 0.5, seed=0)
    engine = ScriptedEngine(policy[1], problems, lambda i, j, p: p.answer if j == 0 else 0)
    tr = make_trainer(
        policy,
        problems,
        tmp_path,
        "trainer.train_batch_size=8",
        "trainer.gen_batch_size=8",
        "trainer.ppo_mini_batch_size=8",
        engine=engine,
        labelled=labelled,
        components=[GroundTruthReward(), OracleNoiseReward(0.0, 0.0, seed=0)],
    )
    result = tr.train_step()
    unlabelled = {g.problem.id for g in result.trained_groups if not g.labelled}
    assert unlabelled and unlabelled <= tr.gt.oracle_reads and not (tr.gt.oracle_reads & labelled)
    assert tr.gt.reads <= labelled
    # no noise: the oracle's verdicts are the truth, so its group AUC is 1
    assert result.metrics["reward/gnn_group_auc"] == 1.0 and result.metrics["metrics_only/reward_fpr"] == 0.0


def test_meds_all_groups_keeps_an_all_wrong_group_once_shaping_separates_it(policy, synthetic_train, tmp_path):
    """meds.apply_to=all_groups with the oracle cluster (the boxed text): problem 0's group is all wrong, three
    rollouts repeat one error, the fourth makes another.

    Step 1: a first visit costs nothing, the candidate stays uniform and is dropped; the 3 mixed groups train.
    Step 2: cluster sizes 3, 3, 3, 1 give penalties p1 = 0.1 ln 4 (x3) and p2 = 0.1 ln 2 = p1 / 2; scores
    -p1, -p1, -p1, -p1/2 have mean -0.875 p1, deviations -0.125 p1 (x3) and 0.375 p1, sample std 0.25 p1, so
    the normalised advantages are -0.5, -0.5, -0.5, 1.5. The mixed groups' wrong rollouts all get p1, which
    normalisation cancels: their advantages stay 1.5, -0.5, -0.5, -0.5. adv_shift: |A_shaped - A_unshaped|
    sums to 3 over problem 0's rows (its unshaped advantages are 0) and 0 elsewhere, over 16 rows: 3/16;
    mean |A_unshaped| = 3 x 3 / 16; the ratio 1/3.
    """
    import math

    from memrl.meds.memory import ErrorMemory
    from memrl.rewards.meds import MEDSShaper

    problems = list(synthetic_train[:4])

    def answer(i, j, p):
        if i == 0:
            return int(p.answer) + (1 if j < 3 else 2)
        return p.answer if j == 0 else int(p.answer) + 1

    def run(apply_to):
        shaper = MEDSShaper(
            policy[1], ErrorMemory(source="oracle"), last_n_layers=0, oracle_label=lambda p, t: t, apply_to=apply_to
        )
        tr = make_trainer(
            policy,
            problems,
            tmp_path / apply_to,
            "algo.filter_groups.enable=true",
            engine=ScriptedEngine(policy[1], problems, answer),
            components=[GroundTruthReward(), shaper],
        )
        seen = []
        update = tr._update

        def record(batch, groups, n_mini):
            rows = batch.response_mask.sum(1)
            seen.append(((batch.advantages.sum(1) / rows).tolist(), [g.problem.id for g in groups]))
            return update(batch, groups, n_mini)

        tr._update = record
        steps = [tr.train_step() for _ in range(2)]
        return steps, seen

    (first, second), seen = run("all_groups")
    assert first.metrics["meds/candidate_groups"] == 1.0 and first.metrics["meds/candidate_groups_kept"] == 0.0
    assert problems[0].id not in seen[0][1] and len(seen[0][1]) == 3 and first.metrics["batch/trained_groups"] == 3
    assert second.metrics["meds/candidate_groups_kept"] == 1.0
    adv, ids = seen[1]
    at = ids.index(problems[0].id)
    p1 = 0.1 * math.log(4)
    group = second.trained_groups[at]
    assert group.outcome == [0.0] * 4 and group.extra["meds_cluster_size"] == [3, 3, 3, 1]
    assert group.score == pytest.approx([-p1, -p1, -p1, -p1 / 2])
    assert adv[4 * at : 4 * at + 4] == pytest.approx([-0.5, -0.5, -0.5, 1.5], abs=1e-4)
    for k in range(4):
        if k != at:
            assert adv[4 * k : 4 * k + 4] == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-4)
    assert second.metrics["meds/adv_shift_abs"] == pytest.approx(3 / 16, abs=1e-4)
    assert second.metrics["meds/adv_shift"] == pytest.approx(1 / 3, abs=1e-4)

    # the paper's after_filter: the all-wrong group is never trained on (DAPO refills the batch with mixed ones)
    (first, second), seen = run("after_filter")
    assert all(problems[0].id not in ids and len(ids) == 4 for _, ids in seen)
    assert "meds/candidate_groups" not in second.metrics
    assert second.metrics["meds/adv_shift"] == pytest.approx(0.0, abs=1e-4)


def test_meds_all_groups_skips_the_update_when_every_candidate_stays_uniform(policy, synthetic_train, tmp_path):
    from memrl.meds.memory import ErrorMemory
    from memrl.rewards.meds import MEDSShaper

    problems = list(synthetic_train[:4])
    shaper = MEDSShaper(policy[1], ErrorMemory(), last_n_layers=0, apply_to="all_groups")
    tr = make_trainer(
        policy,
        problems,
        tmp_path,
        "algo.filter_groups.enable=true",
        engine=ScriptedEngine(policy[1], problems, lambda i, j, p: int(p.answer) + 1),
        components=[GroundTruthReward(), shaper],
    )
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    result = tr.train_step()  # every group all wrong, first visits: nothing to train on
    assert result.trained_groups == [] and result.metrics["meds/candidate_groups"] == 4.0
    assert len(shaper.memory) == 16  # but their errors are remembered for the next visit
    assert all(torch.equal(v, tr.model.state_dict()[k]) for k, v in before.items())
