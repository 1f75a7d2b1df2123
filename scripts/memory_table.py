"""Memory per GPU of the papers' models under FSDP2 (memrl.dist), from their shapes: a table for docs/scaling.md.

    python scripts/memory_table.py                 # markdown table, N = 1, 2, 4, 8, 16, 32 GPUs of 80 GB
    python scripts/memory_table.py --gpus 8 16 --capacity-gb 80
    python scripts/memory_table.py --paper         # GPUs each conf/experiment/paper/ run needs (80 GB, 20 GB left)

Parameter counts are exact: each model is instantiated from its configuration's shapes on the `meta` device
(no weights, no download) with transformers' own class, and its parameters counted. The shapes below are
copied from each model's public `config.json` on the Hugging Face hub (huggingface.co/<id>/blob/main/config.json).

What one GPU holds, with N GPUs sharding one copy (dist.mesh.shard=N; HSDP replicas hold the same):
- training state, sharded: float32 parameters (4 B), float32 gradients (4 B), AdamW's two float32 moments
  (8 B): 16 bytes per parameter / N;
- gathered while computing (FSDP2, bf16 compute): the root group (embeddings, final norm, and the LM head
  when it is not tied) stays gathered from forward to backward (memrl.dist.shard keeps the root unsharded
  after forward), plus two decoder layers at once (the one computing and the one prefetched), in bfloat16,
  plus one layer's float32 gradients before their reduce-scatter;
- the colocated vLLM engine's own bfloat16 copy of the full weights (rollout=vllm, tensor_parallel_size 1).
Not counted: activations (they depend on micro_batch_size and sequence length; gradient checkpointing cuts
them), vLLM's KV cache (rollout.gpu_memory_utilization takes a share of what is left), a KL reference model
(algo.kl_loss_coef > 0: 2 bytes per parameter / N more), CUDA context and allocator fragmentation (~1-3 GB).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

GB = 1e9

# Shapes from the public config.json of each model (huggingface.co/<hub id>/blob/main/config.json).
MODELS: dict[str, dict] = {
    # huggingface.co/Qwen/Qwen2.5-1.5B-Instruct/blob/main/config.json
    "Qwen/Qwen2.5-1.5B-Instruct": dict(
        model_type="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    # huggingface.co/Qwen/Qwen2.5-3B-Instruct/blob/main/config.json
    "Qwen/Qwen2.5-3B-Instruct": dict(
        model_type="qwen2",
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    # huggingface.co/Qwen/Qwen3-1.7B/blob/main/config.json
    "Qwen/Qwen3-1.7B": dict(
        model_type="qwen3",
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    # huggingface.co/Qwen/Qwen2.5-Math-7B/blob/main/config.json
    "Qwen/Qwen2.5-Math-7B": dict(
        model_type="qwen2",
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
    ),
    # huggingface.co/Qwen/Qwen3-8B/blob/main/config.json
    "Qwen/Qwen3-8B": dict(
        model_type="qwen3",
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=False,
    ),
}


@dataclass(frozen=True)
class Counts:
    total: int
    layer: int  # one decoder layer
    root: int  # everything outside the decoder layers (embeddings, final norm, untied LM head)


def count_parameters(shape: dict) -> Counts:
    """Exact parameter counts of the model with these shapes (instantiated on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = dict(shape)
    config = AutoConfig.for_model(kwargs.pop("model_type"), **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    layers = model.model.layers
    layer = sum(p.numel() for p in layers[0].parameters())
    return Counts(total=total, layer=layer, root=total - layer * len(layers))


def per_gpu(c: Counts, n: int) -> dict[str, float]:
    """Bytes per GPU (in GB) with n GPUs sharding one copy."""
    state = 16 * c.total / n
    gathered = 2 * (c.root + 2 * c.layer) + 4 * c.layer
    vllm = 2 * c.total
    return {
        "state": state / GB,
        "gathered": gathered / GB,
        "train": (state + gathered) / GB,
        "vllm": vllm / GB,
        "total": (state + gathered + vllm) / GB,
    }


def table(gpus: list[int], capacity_gb: float) -> str:
    lines = [
        f"| model | parameters | GPUs | train state / GPU (GB) | gathered (GB) | + vLLM weights (GB) "
        f"| total (GB) | left of {capacity_gb:g} GB for activations + KV cache |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, shape in MODELS.items():
        c = count_parameters(shape)
        for n in gpus:
            m = per_gpu(c, n)
            left = capacity_gb - m["total"]
            lines.append(
                f"| {name} | {c.total / 1e9:.2f} B | {n} | {m['state']:.1f} | {m['gathered']:.1f} | {m['vllm']:.1f} "
                f"| {m['total']:.1f} | {left:.1f}{'' if left > 0 else ' (does not fit)'} |"
            )
    return "\n".join(lines)


def paper_runs() -> list[tuple[str, str, bool]]:
    """(experiment, model, any job of its sweep has a KL reference model) of each conf/experiment/paper/ file."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from memrl.apps import CONF_DIR, setup

    setup()
    out = []
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        for path in sorted((Path(CONF_DIR) / "experiment" / "paper").glob("*.yaml")):
            base = [f"experiment=paper/{path.stem}"]
            cfg = compose("train", overrides=base, return_hydra_config=True)
            jobs = [base]
            for key, values in (cfg.hydra.sweeper.params or {}).items():
                jobs = [j + [f"{key}={v}"] for j in jobs for v in str(values).split(",")]
            kl = any(bool(compose("train", overrides=j).algo.use_kl_loss) for j in jobs)
            out.append((path.stem, str(cfg.model.name_or_path), kl))
    GlobalHydra.instance().clear()
    return out


def gpus_needed(c: Counts, kl: bool, capacity_gb: float, headroom_gb: float, node: int = 8) -> tuple[int, float]:
    """The fewest GPUs (1, 2, 4, 8, then whole nodes of `node`) that leave `headroom_gb` of each for activations
    and the KV cache, with a bfloat16 KL reference model sharded over them when `kl`; and what is left."""
    n = 1
    while True:
        total = per_gpu(c, n)["total"] + (2 * c.total / n / GB if kl else 0.0)
        if capacity_gb - total >= headroom_gb:
            return n, capacity_gb - total
        n = n * 2 if n < node else n + node


def paper_table(capacity_gb: float, headroom_gb: float) -> str:
    lines = [
        f"| experiment | model | KL reference | GPUs of {capacity_gb:g} GB | GB left per GPU |",
        "|---|---|---|---|---|",
    ]
    for name, model, kl in paper_runs():
        n, left = gpus_needed(count_parameters(MODELS[model]), kl, capacity_gb, headroom_gb)
        lines.append(f"| paper/{name} | {model} | {'yes' if kl else 'no'} | {n} | {left:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="GPUs sharding one copy")
    ap.add_argument("--capacity-gb", type=float, default=80.0, help="memory of one GPU (GB = 1e9 bytes)")
    ap.add_argument("--paper", action="store_true", help="the GPUs each conf/experiment/paper/ run needs instead")
    ap.add_argument(
        "--headroom-gb", type=float, default=20.0, help="--paper: GB each GPU keeps for activations and the KV cache"
    )
    a = ap.parse_args()
    print(paper_table(a.capacity_gb, a.headroom_gb) if a.paper else table(a.gpus, a.capacity_gb))


if __name__ == "__main__":
    main()
