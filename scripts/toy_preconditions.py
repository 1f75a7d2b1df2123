"""Measure a toy task's preconditions before any RL (docs/toys.md#preconditions).

Builds the task's tiny model if it is not cached (`memrl.policy.tiny_toys.ensure_toy_model`; the build
measures the preconditions on training prompts and writes them to build_info.json), then prints the build
time and the preconditions as JSON. The task's settings are its data preset's (conf/data/<task>.yaml, what
`memrl train data=<task>` uses), changed by the options below. `--remeasure N` samples again on the first N training prompts of the
current data settings instead of printing the build's measurement.

    taskset -c 1 env PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/toy_preconditions.py --task meds_strategies
    taskset -c 1 env PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/toy_preconditions.py --task meds_strategies --layers 8
    taskset -c 1 env PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/toy_preconditions.py --task rule_tags
    taskset -c 1 env PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/toy_preconditions.py --task rule_tags --wrong-plurality-tags 0.5

Pin the build to one core (`taskset`): the build uses as many threads as the process may use cores, two
threads that wait for each other waste most of a shared CPU, and the numbers in docs/toys.md are those of
one-thread builds (the warm start is deterministic for a fixed thread count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

CONF_DATA = Path(__file__).resolve().parent.parent / "conf" / "data"


def preset(task: str) -> Any:
    """The task's `data.synthetic` settings of its data preset (conf/data/<task>.yaml), as a SyntheticConfig:
    the model built here is the one `memrl train data=<task>` trains."""
    from omegaconf import OmegaConf

    from memrl.config.schema import SyntheticConfig

    values = OmegaConf.to_container(OmegaConf.load(CONF_DATA / f"{task}.yaml").synthetic)
    return SyntheticConfig(**values)


def main(argv: list[str] | None = None) -> int:
    from memrl.data.toys import TASKS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=[t for t in TASKS if t != "arithmetic"], required=True)
    ap.add_argument("--layers", type=int, default=None, help="decoder layers of the tiny model (default 4)")
    ap.add_argument("--seed", type=int, default=None, help="data.synthetic.seed (default: the preset's)")
    ap.add_argument("--n-tags", type=int, default=None, help="rule_tags: data.synthetic.n_tags (default: the preset's)")
    ap.add_argument(
        "--wrong-plurality-tags",
        type=float,
        default=None,
        help="rule_tags: data.synthetic.wrong_plurality_tags (0.5: the control; default: the preset's)",
    )
    ap.add_argument(
        "--levels",
        type=int,
        nargs="+",
        default=None,
        help="meds_strategies: data.synthetic.levels (default: the preset's)",
    )
    ap.add_argument("--sft-steps", type=int, default=None, help="warm-start steps of the build (default 960)")
    ap.add_argument("--remeasure", type=int, default=0, help="sample again on this many training prompts")
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args(argv)

    overrides = {
        "seed": args.seed,
        "n_tags": args.n_tags,
        "wrong_plurality_tags": args.wrong_plurality_tags,
        "levels": args.levels,
    }
    cfg = dataclasses.replace(preset(args.task), **{k: v for k, v in overrides.items() if v is not None})
    from memrl.policy.tiny import BUILD_INFO
    from memrl.policy.tiny_toys import ensure_toy_model

    path = ensure_toy_model(cfg, args.layers, args.cache_dir, sys.stderr.isatty(), args.sft_steps)
    info = json.loads((path / BUILD_INFO).read_text())
    out = {
        "model": str(path),
        "task": info["task"],
        "layers": info["model"]["layers"],
        "parameters": info["model"]["parameters"],
        "build_seconds": info["build_seconds"],
        "timing_s": info["timing_s"],
        "threads": info["threads"],
        "sft_steps": info["sft"]["steps"],
        "sft_loss_last50_mean": info["sft"]["loss_last50_mean"],
    }
    if args.remeasure:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from memrl.data.toys import load_split
        from memrl.policy.tiny_toys import measure_toy, toy_build_settings

        settings = toy_build_settings(args.task, args.layers, args.sft_steps)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"
        torch.manual_seed(settings.seed)
        problems = load_split("train", dataclasses.replace(cfg, train_size=args.remeasure))
        out["preconditions"] = measure_toy(model, tokenizer, cfg, problems, settings)
    else:
        out["preconditions"] = info["preconditions"]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
