"""Registries: lookups by config name, clear errors, and a user plugin that `memrl train` really uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from memrl.errors import UserError
from memrl.utils.registry import Registry, import_plugins

REPO = Path(__file__).resolve().parents[2]


def test_lookup_duplicates_and_lazy_entries():
    reg: Registry = Registry("widget", "thing.widget")
    reg.register("a")(len)
    reg.register("a")(len)  # the same object again (a module imported twice) is fine
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a")(sum)
    reg.register_lazy("b", "math:sqrt")
    assert reg.names() == ["a", "b"] and "b" in reg
    assert reg.get("b")(9.0) == 3.0
    with pytest.raises(UserError, match=r"unknown thing.widget=c; registered widgets: a, b \(a plugin module"):
        reg.get("c")


def test_names_keep_registration_order_after_a_lazy_import():
    reg: Registry = Registry("widget", "thing.widget")
    reg.register_lazy("x", "math:sqrt")
    reg.register("y")(len)
    assert reg.names() == ["x", "y"]
    reg.get("x")  # imports it: the listing must not depend on which entries were looked up before
    assert reg.names() == ["x", "y"]


def test_a_missing_plugin_module_is_a_user_error():
    with pytest.raises(UserError, match="plugins: cannot import 'no_such_memrl_plugin'"):
        import_plugins(["no_such_memrl_plugin"])


def test_the_builtin_estimators_read_their_knobs_from_algo():
    from memrl.config.schema import AlgoConfig
    from memrl.rl.core_algos import ADV_ESTIMATORS, KL_ESTIMATORS

    scores = torch.tensor([1.0, 0.0, 0.0, 0.0])  # one group of 4: mean 0.25, std (unbiased) 0.5
    grpo = ADV_ESTIMATORS.get("grpo").outcome(scores, [0, 0, 0, 0], AlgoConfig())
    torch.testing.assert_close(grpo, torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-5, rtol=0)
    dr = ADV_ESTIMATORS.get("dr_grpo").outcome(scores, [0, 0, 0, 0], AlgoConfig())
    torch.testing.assert_close(dr, torch.tensor([0.75, -0.25, -0.25, -0.25]))
    ent = ADV_ESTIMATORS.get("grpo_entropy")
    assert ADV_ESTIMATORS.get("grpo").token is None and ent.outcome is ADV_ESTIMATORS.get("grpo").outcome
    # A + min(0.4 * H, 0.5 * |A|): A=1, H=1 -> 1.4;  A=-1, H=3 -> -1 + min(1.2, 0.5) = -0.5
    out = ent.token(torch.tensor([[1.0, -1.0]]), torch.tensor([[1.0, 3.0]]), AlgoConfig())
    torch.testing.assert_close(out, torch.tensor([[1.4, -0.5]]))
    # k1 = logp - ref
    torch.testing.assert_close(KL_ESTIMATORS.get("kl")(torch.tensor([[0.0]]), torch.tensor([[-1.0]])), torch.ones(1, 1))


PLUGIN = '''
"""A user's advantage estimator: +1 above the group mean, -1 below, 0 at it; logs every call."""

import json

import torch

from memrl.rl.core_algos import register_adv_est


@register_adv_est("sign_of_mean_gap")
def sign_of_mean_gap(scores, group_ids, algo):
    ids = torch.as_tensor(group_ids)
    adv = torch.zeros_like(scores)
    for g in torch.unique(ids):
        rows = ids == g
        adv[rows] = torch.sign(scores[rows] - scores[rows].mean())
    with open("estimator_calls.jsonl", "a") as f:
        f.write(json.dumps({"rollouts": len(scores), "groups": int(torch.unique(ids).numel())}) + "\\n")
    return adv
'''


def test_a_plugin_estimator_trains_a_step(tmp_path, tiny_model_dir):
    """`memrl train plugins=[my_estimator] algo.adv_estimator=sign_of_mean_gap`, with the module in the current
    directory and nothing edited in memrl: the step's advantages are the plugin's (+-1 or 0)."""
    (tmp_path / "my_estimator.py").write_text(textwrap.dedent(PLUGIN))
    run = tmp_path / "run"
    args = [
        "plugins=[my_estimator]",
        "algo.adv_estimator=sign_of_mean_gap",
        "algo.filter_groups.enable=false",
        "trainer.total_steps=1",
        "trainer.train_batch_size=2",
        "trainer.gen_batch_size=2",
        "trainer.ppo_mini_batch_size=2",
        "trainer.final_eval=false",
        "trainer.progress=false",
        "rollout.n=4",
        "rollout.max_new_tokens=16",
        f"hydra.run.dir={run}",
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(REPO),
    }
    cmd = [sys.executable, "-c", "from memrl.cli import main; main()", "train", *args]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = [json.loads(line) for line in (tmp_path / "estimator_calls.jsonl").read_text().splitlines()]
    assert calls == [{"rollouts": 8, "groups": 2}]  # one step: 2 groups x 4 rollouts
    (step,) = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert step["critic/advantages/max"] in (0.0, 1.0) and step["critic/advantages/min"] in (0.0, -1.0)

    # an unknown name is refused before the model loads, with the registered names (the plugin's included)
    bad = subprocess.run(
        [*cmd[: -len(args)], "plugins=[my_estimator]", "algo.adv_estimator=sign", f"hydra.run.dir={tmp_path / 'bad'}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2
    assert (
        "unknown algo.adv_estimator=sign; registered advantage estimators: grpo, dr_grpo, grpo_entropy, " in bad.stderr
    )
    assert "sign_of_mean_gap" in bad.stderr
