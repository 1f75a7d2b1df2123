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
    ]:
        cfg = compose_eval("meds=enabled", override, config_name="train")
        with pytest.raises(UserError, match=re.escape(message)):
            check_reward_config(cfg)
        with pytest.raises(UserError, match=re.escape(message)):
            build_reward_pipeline(cfg, BuildContext(tokenizer=tok))
