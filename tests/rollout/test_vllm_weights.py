"""The weight stream the vLLM engine is synced from (memrl.rollout.vllm_weights); no vLLM needed.

Under FSDP2 on 2 gloo processes, every streamed tensor is the whole parameter (equal to DCP's own gathered
state dict), in the state dict's order, cast to the engine's dtype, and the stream holds no reference to a
tensor once the next one is asked for (no rank keeps a second full copy of the model).
"""

from __future__ import annotations

import pytest
import torch

from memrl.rollout.vllm_weights import full_tensor, stream_weights

pytestmark = pytest.mark.timeout(900)


def test_plain_model_streams_its_state_dict_cast(policy):
    model, _ = policy
    sd = model.state_dict()
    streamed = list(stream_weights(model, torch.bfloat16))
    assert [n for n, _ in streamed] == list(sd)
    for name, t in streamed:
        assert t.dtype == torch.bfloat16 and not t.requires_grad
        assert torch.equal(t, sd[name].to(torch.bfloat16))
    # dtype None keeps the tensors as they are
    name, t = next(stream_weights(model))
    assert t.dtype == sd[name].dtype and torch.equal(t, sd[name])


def test_integer_tensors_are_not_cast():
    t = torch.arange(5)
    assert full_tensor(t, torch.bfloat16).dtype == torch.long


def test_fsdp2_shards_stream_as_full_tensors(tmp_path, run_worker):
    ranks, _ = run_worker(tmp_path, "stream")
    for res in ranks:
        assert res["world_size"] == 2
        # every parameter was a DTensor shard, and came out whole and exact, in the state dict's order
        assert res["sharded"] == len(res["expected"]) > 0
        assert res["names"] == res["expected"]
        assert res["max_diff"] == 0.0
        assert res["max_diff_bf16"] == 0.0
        # each yielded tensor was freed before the next was gathered
        assert res["freed"] == len(res["names"]) - 1
