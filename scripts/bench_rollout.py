"""Rollout throughput of the transformers engine: batched groups vs one generate call per prompt.

    make bench            (or: python scripts/bench_rollout.py --prompts 32 --max-new-tokens 48)

Both arms sample the same prompts with the same settings on the same model in this run; the
baseline is the naive loop (one `generate` call per prompt, num_return_sequences=n), which is what a
hand-written GRPO loop does. Prints completion tokens per second and the ratio. The vLLM engine
joins this comparison when it is built.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=32, help="prompts per generate call in the batched arm")
    ap.add_argument("--model", default="tiny")
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
    print(
        f"model {path} on {device}, torch threads {torch.get_num_threads()}, {len(prompts)} prompts, "
        f"max_new_tokens {args.max_new_tokens}"
    )
    print(f"{'n':>4} {'batched tok/s':>14} {'per-prompt tok/s':>17} {'ratio':>7}")
    for n in args.n:
        params = SamplingParams(n=n, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
        # the batched arm limits the expanded batch (prompts x n) to about the same number of sequences
        batched = HFEngine(model, tok, batch_size=max(1, args.batch_size * 8 // n))
        single = HFEngine(model, tok, batch_size=1)
        rates = []
        for engine in (batched, single):
            t0 = time.perf_counter()
            groups = engine.generate(prompts, params)
            dt = time.perf_counter() - t0
            rates.append(sum(r.num_tokens for g in groups for r in g) / dt)
        print(f"{n:>4} {rates[0]:>14.0f} {rates[1]:>17.0f} {rates[0] / rates[1]:>6.2f}x")


if __name__ == "__main__":
    main()
