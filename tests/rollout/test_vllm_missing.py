"""Without vLLM installed (the main environment), `rollout=vllm` fails with a message that names the fix."""

from __future__ import annotations

import importlib.util

import pytest

from memrl.errors import UserError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vllm is installed here (tests/rollout/test_vllm_engine.py)"
)


def test_build_engine_names_the_fix_when_vllm_is_missing(compose_eval):
    from memrl.rollout.build import build_engine

    cfg = compose_eval("rollout=vllm")
    assert cfg.rollout.engine == "vllm" and cfg.rollout.gpu_memory_utilization == 0.5 and cfg.rollout.sleep is True
    with pytest.raises(UserError) as e:
        build_engine(cfg.rollout, model=None, tokenizer=None)
    msg = str(e.value)
    assert "vllm package" in msg and "pip install -e '.[vllm]'" in msg and "make test-vllm" in msg
    assert "rollout=hf" in msg


def test_unknown_engine_lists_both(compose_eval):
    from memrl.rollout.build import build_engine

    cfg = compose_eval("rollout.engine=sglang")
    with pytest.raises(UserError, match="valid: hf, vllm"):
        build_engine(cfg.rollout, model=None, tokenizer=None)
