"""One rank of the rollout tests under torchrun (tests/rollout/test_vllm_weights.py, test_vllm_dist.py).

The tiny model, FSDP2-sharded over all ranks (memrl.dist, gloo on CPU), trained one SGD step so that its
weights differ from the checkpoint's. Rank r writes `<out>/rank{r}.json`.

    dist_worker.py stream --out DIR    the weight stream (memrl.rollout.vllm_weights) against DCP's own full
                                       state dict; no vLLM needed
    dist_worker.py vllm --out DIR [--tp T]
                                       one vLLM engine per rank (external_launcher), synced from the sharded
                                       model; its log-probs against transformers on the full weights
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import weakref
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from memrl.config.schema import DistConfig, ModelConfig
from memrl.dist.runtime import build_mesh, init_distributed, shutdown
from memrl.dist.shard import shard_model
from memrl.policy.load import load_policy
from memrl.policy.tiny import ensure_tiny_model


def sharded_policy(rank: int):
    """(sharded model trained one step, tokenizer, the full state dict every rank got from DCP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    path = ensure_tiny_model(progress=False)
    model, tok, _ = load_policy(ModelConfig(name_or_path=str(path), device="cpu", dtype="float32"))
    settings = DistConfig()
    ctx = init_distributed(settings)
    shard_model(model, build_mesh(settings, ctx), settings)
    # one SGD step on this rank's own tokens: the weights move away from the checkpoint's
    g = torch.Generator().manual_seed(100 + rank)
    ids = torch.randint(0, len(tok), (2, 12), generator=g)
    model(input_ids=ids, labels=ids).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    return model, tok, full


def run_stream(out: Path, rank: int) -> dict:
    from memrl.rollout.vllm_weights import stream_weights

    model, _, full = sharded_policy(rank)
    sharded = sum(1 for v in model.state_dict().values() if type(v).__name__ == "DTensor")
    names, max_diff, max_diff_bf16, prev, freed = [], 0.0, 0.0, None, 0
    for name, t in stream_weights(model, torch.float32):
        if prev is not None:  # the stream keeps no reference to the tensor it yielded before
            gc.collect()
            freed += prev() is None
        assert type(t) is torch.Tensor and t.shape == full[name].shape, (name, type(t), t.shape)
        names.append(name)
        max_diff = max(max_diff, (t - full[name]).abs().max().item())
        prev = weakref.ref(t)
        del t
    for name, t in stream_weights(model, torch.bfloat16):
        assert t.dtype == torch.bfloat16, (name, t.dtype)
        max_diff_bf16 = max(max_diff_bf16, (t.float() - full[name].to(torch.bfloat16).float()).abs().max().item())
    return dict(
        names=names,
        expected=list(full),
        sharded=sharded,
        max_diff=max_diff,
        max_diff_bf16=max_diff_bf16,
        freed=freed,
    )


def hf_logprobs(model, prompt_ids: list[int], ids: list[int]) -> list[float]:
    x = torch.tensor([prompt_ids + ids])
    with torch.no_grad():
        lp = torch.log_softmax(model(x).logits.float(), -1)[0]
    start = len(prompt_ids) - 1
    return [lp[start + k, t].item() for k, t in enumerate(ids)]


def run_vllm(out: Path, rank: int, tp: int) -> dict:
    from memrl.config.schema import SyntheticConfig
    from memrl.data.synthetic import load_split
    from memrl.data.templates import format_prompt
    from memrl.rollout.records import SamplingParams
    from memrl.rollout.vllm_engine import VLLMEngine

    path = ensure_tiny_model(progress=False)
    model, tok, full = sharded_policy(rank)
    engine = VLLMEngine(
        model,
        tok,
        dtype="float32",
        enforce_eager=True,
        kv_cache_gb=0.25,
        max_model_len=512,
        logprobs=True,
        tensor_parallel_size=tp,
    )
    pc = engine.llm.llm_engine.vllm_config.parallel_config
    # rank r has 2 + r prompts of its own (unequal shares: the engines run independently, or gather per TP group)
    problems = load_split("test", SyntheticConfig())
    prompts = [format_prompt(p, tok) for p in problems[10 * rank : 10 * rank + 2 + rank]]
    groups = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=16))
    trained, _, _ = load_policy(ModelConfig(name_or_path=str(path), device="cpu", dtype="float32"))
    original, _, _ = load_policy(ModelConfig(name_or_path=str(path), device="cpu", dtype="float32"))
    trained.load_state_dict(full)
    diff, diff_original = 0.0, 0.0
    for g in groups:
        r = g[0]
        lp = torch.tensor(r.logprobs)
        diff = max(diff, (lp - torch.tensor(hf_logprobs(trained, r.prompt_token_ids, r.token_ids))).abs().max().item())
        ref = torch.tensor(hf_logprobs(original, r.prompt_token_ids, r.token_ids))
        diff_original = max(diff_original, (lp - ref).abs().max().item())
    if tp > 1:  # closed before the process group ends; with tp 1 the engine is torn down at exit, after it
        engine.close()
    return dict(
        executor=pc.distributed_executor_backend,
        tp=pc.tensor_parallel_size,
        prompts_match=[g[0].prompt for g in groups] == prompts,
        prompt_indices=[g[0].prompt_index for g in groups],
        tokens=sum(g[0].num_tokens for g in groups),
        logprob_diff=diff,
        logprob_diff_original=diff_original,
    )


@record
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["stream", "vllm"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--tp", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    out = Path(a.out)
    res = run_stream(out, rank) if a.mode == "stream" else run_vllm(out, rank, a.tp)
    res["world_size"] = int(os.environ["WORLD_SIZE"])
    (out / f"rank{rank}.json").write_text(json.dumps(res))
    shutdown()


if __name__ == "__main__":
    main()
