"""The prompt sampler's resumable order, and checkpoint folders written atomically with `latest` last."""

from __future__ import annotations

import torch

from memrl.rl import checkpoint as ckpt
from memrl.rl.sampler import PromptSampler


def test_sampler_epochs_are_permutations_and_resume_exactly():
    s = PromptSampler(10, seed=3)
    first = s.next(10)
    assert sorted(first) == list(range(10))
    second = s.next(10)
    assert sorted(second) == list(range(10)) and second != first  # a fresh permutation per epoch
    a = PromptSampler(10, seed=3)
    a.next(7)
    state = a.state_dict()
    b = PromptSampler(10, seed=3)
    b.load_state_dict(state)
    assert a.next(15) == b.next(15)


def test_checkpoint_round_trip_and_pruning(policy, tmp_path):
    model, tok = policy
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    killed = tmp_path / ".global_step_2.tmp-abc"  # what a writer killed mid-save leaves behind
    (killed / "policy").mkdir(parents=True)
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, model, tok, opt, sched, {"x": step}, {"comp": {"n": step}}, keep=2)
    assert ckpt.list_checkpoints(tmp_path) == [2, 3]
    assert (tmp_path / "latest").read_text().strip() == "global_step_3"
    assert not list(tmp_path.glob(".global_step_*"))  # no temporary folder left behind, nor the killed one
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    r = torch.rand(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), model, opt, sched)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.rand(3), r)  # the RNG state at save time is back
    assert state["trainer"] == {"step": 3, "x": 3} and state["rewards"] == {"comp": {"n": 3}}
    assert opt.state_dict()["state"]  # Adam moments restored


def test_no_latest_means_no_checkpoint(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    (tmp_path / "global_step_5").mkdir()  # an incomplete folder is not a checkpoint
    assert ckpt.list_checkpoints(tmp_path) == []
