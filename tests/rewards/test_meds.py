"""MEDS as a reward component: penalties from the memory of past steps, in the trainer, through a checkpoint."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from memrl.data.labels import GroundTruth
from memrl.data.problem import Problem
from memrl.grading import Grader
from memrl.meds.memory import ErrorMemory
from memrl.rewards.base import Group, RewardContext, ScoringOutputs
from memrl.rewards.meds import MEDSShaper
from memrl.rollout.records import Rollout

PIECES = {0: "x", 1: "\\boxed{", 2: "4", 3: "}", 4: "5"}


class PieceTokenizer:
    def decode(self, ids, skip_special_tokens=False):
        return "".join(PIECES[i] for i in ids)


class HeadOnly:
    """A model as MEDS sees it: an output matrix (identity on 5 tokens of width 5)."""

    def __init__(self):
        self.head = torch.nn.Linear(5, 5, bias=False)
        self.head.weight.data = torch.eye(5)

    def get_output_embeddings(self):
        return self.head


def _rollout(ids):
    return Rollout(0, 0, "p", PieceTokenizer().decode(ids), token_ids=list(ids), prompt_token_ids=[0])


def _step(shaper, outcomes, hidden_rows, anchored):
    """One shaping step on one prompt; hidden_rows[i] is the last layer's state at rollout i's anchor."""
    ids = [[0, 1, 2, 3] if a else [0, 2, 3, 0] for a in anchored]
    g = Group(Problem("q", "Compute 2 + 2.", None), "p", [_rollout(x) for x in ids], True)
    g.outcome = list(outcomes)
    g.score = [float(o) for o in outcomes]
    positions = torch.tensor(shaper.hidden_state_request().positions(g.rollouts))
    hidden = torch.zeros(len(ids), 3, 5)  # [B, L + 1, H]: embedding output, 2 layers
    hidden[:, 1] = 1.0
    hidden[:, 2] = torch.tensor(hidden_rows, dtype=torch.float32)
    # the query is unlabelled: MEDS works from the believed outcomes (a MemReward prediction) and must
    # never read its ground truth
    labels = GroundTruth([Problem("q", "Compute 2 + 2.", "4")], set())
    with Grader(num_workers=0) as grader:
        ctx = RewardContext(labels, grader, step=0, max_response_length=8)
        metrics = shaper.shape([g], ScoringOutputs(hidden, positions, HeadOnly()), ctx)
    assert labels.reads == set()
    return g, positions, metrics


def test_penalties_come_from_past_steps_only():
    shaper = MEDSShaper(PieceTokenizer(), ErrorMemory(), last_n_layers=0)
    # target token "4" (id 2): feature = (h_1[2], h_2[2]) = (1, row[2])
    wrong_a, wrong_b, right = [0, 0, 2.0, 0, 0], [0, 0, 2.1, 0, 0], [0, 0, -3.0, 0, 0]
    g, positions, m = _step(shaper, [0.0, 0.0, 1.0, 0.0], [wrong_a, wrong_b, right, wrong_a], [1, 1, 1, 0])
    assert positions.tolist() == [1, 1, 1, -1]  # the last rollout has no anchor
    assert g.score == [0.0, 0.0, 1.0, 0.0]  # first visit: no penalty, same-step rollouts do not count
    assert g.extra["meds_cluster_size"] == [0, 0, 0, 0]
    assert len(shaper.memory) == 3 and m["meds/anchored_frac"] == 0.75
    assert set(shaper.memory.entries) == {("q", 0), ("q", 1)}

    # second visit: both wrong rollouts fall among the 2 stored wrong vectors; the right one is not penalised
    g, _, m = _step(shaper, [0.0, 0.0, 1.0, 0.0], [wrong_a, wrong_b, right, wrong_a], [1, 1, 1, 0])
    p = 0.1 * math.log(3)
    assert g.extra["meds_cluster_size"] == [2, 2, 1, 0]
    assert g.score == pytest.approx([-p, -p, 1.0, 0.0])
    assert m["meds/penalised_frac"] == 0.5 and m["meds/penalty_mean"] == pytest.approx(p / 2)
    assert m["meds/distinct_answers"] == 2.0  # "4" three times, one missing answer

    # target "both" shrinks the right rollout's score by its own memory's cluster; the wrong memory now holds
    # two copies each of two points, two clusters of 2, and wrong_a falls into its copies' one
    both = MEDSShaper(PieceTokenizer(), ErrorMemory(), penalty_target="both", last_n_layers=0)
    both.load_state_dict(shaper.state_dict())
    g, _, _ = _step(both, [0.0, 1.0], [wrong_a, right], [1, 1])
    assert g.extra["meds_cluster_size"] == [2, 2]
    assert g.score == pytest.approx([-p, 1.0 / (1.0 + p)])


def test_meds_in_the_trainer_and_through_a_checkpoint(policy, tmp_path):
    """Real hidden states of the tiny policy through the trainer's scoring pass; memory state round-trips."""
    from memrl.config.schema import train_config
    from memrl.data.templates import format_prompt
    from memrl.rewards.base import RewardPipeline
    from memrl.rewards.oracle import GroundTruthReward
    from memrl.rl.trainer import Trainer

    model, tok = policy
    problems = [Problem(f"p{i}", f"Compute {i} + 2.", str(i + 2)) for i in range(4)]

    class Scripted:
        """Even samples right, odd ones wrong by one: every group is mixed, every prompt revisited."""

        def sync_weights(self, model):
            pass

        def sleep(self):

            pass

        def generate(self, prompts, params, progress=None):
            out = []
            for pi, prompt in enumerate(prompts):
                i = [format_prompt(p) for p in problems].index(prompt)
                group = []
                for j in range(params.n):
                    text = f"Careful: \\boxed{{{i + 2 + j % 2}}}"
                    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                    group.append(Rollout(pi, j, prompt, text, ids, tok(prompt)["input_ids"], "stop"))
                out.append(group)
            return out

    def trainer(resume):
        cfg = train_config(
            "trainer.total_steps=2",
            "trainer.train_batch_size=4",
            "trainer.gen_batch_size=4",
            "trainer.ppo_mini_batch_size=4",
            "rollout.n=4",
            "rollout.max_new_tokens=16",
            "trainer.lr=1e-5",
            "trainer.progress=false",
            f"trainer.resume={resume}",
            "algo.filter_groups.enable=true",
        )
        shaper = MEDSShaper(tok, ErrorMemory(), last_n_layers=0)
        t = Trainer(
            cfg,
            model,
            tok,
            Scripted(),
            RewardPipeline([GroundTruthReward(), shaper]),
            GroundTruth(problems, {p.id for p in problems}),
            problems,
            format_prompt,
            Grader(num_workers=0),
            tmp_path,
        )
        return t, shaper

    t, shaper = trainer("disable")
    first = t.train_step()
    t.step += 1
    assert first.metrics["meds/anchored_frac"] == 1.0
    assert first.metrics["meds/penalised_frac"] == 0.0
    # 4 prompts x (2 right + 2 wrong) vectors of 4 layer logits each
    assert len(shaper.memory) == 16 and all(e.vectors.shape[1] == 4 for e in shaper.memory.entries.values())
    second = t.train_step()
    t.step += 1
    assert second.metrics["meds/penalised_frac"] == 0.5  # every wrong rollout, no right one
    for g in second.trained_groups:
        for o, s, n in zip(g.outcome, g.score, g.extra["meds_cluster_size"]):
            assert n >= 1 if o == 0.0 else True
            assert s == pytest.approx(1.0 if o == 1.0 else -0.1 * min(math.log(n + 1), 2.0))
    t.save()

    resumed, shaper2 = trainer("auto")
    resumed._maybe_resume()
    assert resumed.step == 2 and len(shaper2.memory) == len(shaper.memory) == 32
    for key, entry in shaper.memory.entries.items():
        np.testing.assert_array_equal(shaper2.memory.entries[key].vectors, entry.vectors)
        np.testing.assert_array_equal(shaper2.memory.entries[key].labels, entry.labels)
    assert shaper2.novelty.seen == shaper.novelty.seen


def test_bad_meds_settings_name_the_key(compose_eval):
    from memrl.errors import UserError
    from memrl.rewards.registry import BuildContext, build_reward_pipeline, check_reward_config

    tok = PieceTokenizer()
    pipeline = build_reward_pipeline(compose_eval("meds=enabled", config_name="train"), BuildContext(tokenizer=tok))
    assert [c.name for c in pipeline.components] == ["ground_truth", "meds"]
    for override, message in [
        ("meds.penalty_target=sometimes", "meds.penalty_target=sometimes; valid: wrong, right, both, none"),
        ("meds.cluster_method=kmeans", "meds.cluster_method=kmeans; valid: hdbscan, single"),
        ("meds.min_cluster_size=1", "meds.min_cluster_size must be >= 2"),
        ("meds.anchor_patterns=[]", "meds.anchor_patterns is empty"),
        ("meds.cluster_source=truth", "meds.cluster_source=truth; valid: hdbscan, oracle"),
        ("meds.count=rollouts", "meds.count=rollouts; valid: cluster, visits"),
        ("meds.apply_to=everything", "meds.apply_to=everything; valid: after_filter, all_groups"),
        ("meds.cluster_source=oracle meds.cluster_method=single", "cannot be combined with meds.cluster_method=single"),
        ("meds.cluster_source=oracle data=gsm8k_rl", "this run has data.train_set gsm8k-train (source=bundled)"),
    ]:
        cfg = compose_eval("meds=enabled", *override.split(), config_name="train")
        with pytest.raises(UserError, match=re.escape(message)):
            check_reward_config(cfg)
        with pytest.raises(UserError, match=re.escape(message)):
            build_reward_pipeline(cfg, BuildContext(tokenizer=tok))


def test_oracle_cluster_source_reads_the_tasks_strategy(compose_eval):
    """On the synthetic tasks the oracle cluster is the behaviour the task knows produced a completion."""
    from memrl.data.toys import behaviour_of
    from memrl.rewards.meds import oracle_labeller
    from memrl.rewards.registry import BuildContext, build_reward_pipeline

    cfg = compose_eval("meds=enabled", "meds.cluster_source=oracle", "data=meds_strategies", config_name="train")
    shaper = build_reward_pipeline(cfg, BuildContext(tokenizer=PieceTokenizer())).components[-1]
    assert shaper.memory.source == "oracle" and shaper.memory.count == "cluster"
    label = oracle_labeller(cfg)
    problem = Problem("p", "Compute 37 + 8 - 5.", None)
    for text in ["Careful: 37 + 8 = 45. 45 - 5 = 40. \\boxed{40}", "Guess: about 37. \\boxed{37}", "\\boxed{1000}"]:
        assert label(problem, text) == behaviour_of(cfg.data.synthetic, problem, text)
    assert label(problem, "Careful: \\boxed{40}") == "careful" and label(problem, "\\boxed{1000}") is None


def test_shaper_with_oracle_clusters_and_visit_counts():
    """Identical features, different strategies: the oracle separates what the features cannot."""
    labels = iter(["slip", "slip", "skip"] * 2)
    shaper = MEDSShaper(
        PieceTokenizer(),
        ErrorMemory(source="oracle", count="visits"),
        last_n_layers=0,
        oracle_label=lambda problem, text: next(labels),
    )
    row = [0, 0, 2.0, 0, 0]
    _step(shaper, [0.0, 0.0, 0.0], [row] * 3, [1, 1, 1])
    g, _, _ = _step(shaper, [0.0, 0.0, 0.0], [row] * 3, [1, 1, 1])
    assert g.extra["meds_cluster_size"] == [1, 1, 1]  # one past visit each, whatever its rollouts
    assert g.extra["meds_unshaped_score"] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="oracle_label function is given exactly"):
        MEDSShaper(PieceTokenizer(), ErrorMemory(source="oracle"))


def test_candidates_and_the_advantage_shift_by_hand():
    """mark_shaping_candidates picks the uniform groups the target applies to; keep_after_shaping drops those
    still uniform. advantage_shift with s - mean(s) as the estimator: group [1, 0, 0, 0] shaped to
    [1, -0.2, 0, 0]: A_unshaped = .75, -.25, -.25, -.25 and A_shaped = .8, -.4, -.2, -.2; |diff| averages
    (.05 + .15 + .05 + .05) / 4 = .075 and mean |A_unshaped| = 1.5 / 4 = .375: a shift of 0.2. The untouched
    group [1, 0] does not count."""
    from memrl.rewards.meds import CANDIDATE, advantage_shift, keep_after_shaping, mark_shaping_candidates

    def group(outcome, score=None):
        g = Group(Problem("q", "Compute 2 + 2.", None), "p", [_rollout([0])] * len(outcome), True)
        g.outcome, g.score = list(outcome), list(score if score is not None else outcome)
        return g

    groups = [group([0.0, 0.0]), group([1.0, 1.0]), group([1.0, 0.0])]
    after = MEDSShaper(PieceTokenizer(), ErrorMemory())
    assert mark_shaping_candidates([after], groups) == [False, False, False]
    both = MEDSShaper(PieceTokenizer(), ErrorMemory(), penalty_target="both", apply_to="all_groups")
    wrong = MEDSShaper(PieceTokenizer(), ErrorMemory(), apply_to="all_groups")
    assert mark_shaping_candidates([both], groups) == [True, True, False]
    groups = [group([0.0, 0.0]), group([1.0, 1.0]), group([1.0, 0.0])]
    assert mark_shaping_candidates([wrong], groups) == [True, False, False]
    assert [bool(g.extra.get(CANDIDATE)) for g in groups] == [True, False, False]
    assert keep_after_shaping(groups) == [False, True, True]
    groups[0].score = [-0.1, -0.2]
    assert keep_after_shaping(groups) == [True, True, True]

    shaped = group([1.0, 0.0, 0.0, 0.0], [1.0, -0.2, 0.0, 0.0])
    shaped.extra["meds_unshaped_score"] = [1.0, 0.0, 0.0, 0.0]
    untouched = group([1.0, 0.0])
    untouched.extra["meds_unshaped_score"] = [1.0, 0.0]
    gids = torch.tensor([0, 0, 0, 0, 1, 1])

    def centre(s):
        return torch.cat([s[gids == k] - s[gids == k].mean() for k in (0, 1)])

    adv = centre(torch.tensor([1.0, -0.2, 0.0, 0.0, 1.0, 0.0]))
    m = advantage_shift([shaped, untouched], adv, centre)
    assert m["meds/adv_shift_abs"] == pytest.approx(0.075) and m["meds/adv_shift"] == pytest.approx(0.2)
    assert advantage_shift([group([1.0, 0.0])], adv[4:], centre) == {}  # MEDS did not run
