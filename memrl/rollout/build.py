"""The rollout engine named by `rollout.engine`: hf (`memrl.rollout.hf_engine`) or vllm (`memrl.rollout.vllm_engine`)."""

from __future__ import annotations

from typing import Any

from memrl.config.schema import RolloutConfig
from memrl.errors import UserError
from memrl.rollout.hf_engine import HFEngine
from memrl.rollout.vllm_engine import VLLMEngine

ENGINES = ("hf", "vllm")


def build_engine(rollout_cfg: RolloutConfig, model: Any, tokenizer: Any) -> Any:
    """The rollout engine of `rollout` for this policy (vLLM holds its own copy of the weights)."""
    engine = str(rollout_cfg.engine)
    if engine == "hf":
        return HFEngine(model, tokenizer, batch_size=int(rollout_cfg.batch_size))
    if engine == "vllm":
        # the vllm package itself is heavy and optional: VLLMEngine imports it when built
        return VLLMEngine(
            model,
            tokenizer,
            batch_size=int(rollout_cfg.batch_size),
            gpu_memory_utilization=float(rollout_cfg.gpu_memory_utilization),
            kv_cache_gb=rollout_cfg.kv_cache_gb,
            enforce_eager=bool(rollout_cfg.enforce_eager),
            max_model_len=rollout_cfg.max_model_len,
            dtype=str(rollout_cfg.dtype),
            sleep=bool(rollout_cfg.sleep),
            tensor_parallel_size=int(rollout_cfg.tensor_parallel_size),
        )
    raise UserError(f"unknown rollout.engine={engine}; valid: {', '.join(ENGINES)}")
