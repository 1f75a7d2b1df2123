"""Load a policy (causal LM) and its tokenizer from any of the places a user may name.

`model.name_or_path` may be "tiny" (the tiny model of `data.synthetic.task`, built on first use: the embedded
default for the arithmetic task, docs/toys.md's models for the toys), a Hugging Face model
directory, a memrl run directory or checkpoint directory, or a hub id (only when the user names one;
offline machines get a clear error that says how to get the model).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from memrl.config.schema import ModelConfig
from memrl.errors import UserError
from memrl.policy.tiny import ensure_tiny_model
from memrl.policy.tiny_toys import ensure_toy_model

log = logging.getLogger(__name__)


def resolve_checkpoint(path: Path) -> Path | None:
    """The Hugging Face model folder inside a memrl run or checkpoint directory, if `path` is one.

    Accepted: a model folder itself (has config.json); `.../train/global_step_N` (its `policy/`); a run
    directory (its `train/latest` pointer names the last complete checkpoint).
    """
    if (path / "config.json").exists():
        return path
    if (path / "policy" / "config.json").exists():
        return path / "policy"
    latest = path / "train" / "latest"
    if latest.exists():
        step_dir = path / "train" / latest.read_text().strip()
        if (step_dir / "policy" / "config.json").exists():
            return step_dir / "policy"
        raise UserError(f"{latest} points at {step_dir}, which holds no policy/ checkpoint")
    return None


def resolve_model_path(
    name_or_path: str,
    cache_dir: str | os.PathLike | None = None,
    synthetic: Any = None,
    tiny_layers: int | None = None,
) -> str:
    """Turn `model.name_or_path` into something `from_pretrained` can load, building "tiny" if needed.

    "tiny" is the tiny model of `synthetic.task` (`data.synthetic`) with `tiny_layers` layers: the embedded
    default for the arithmetic task (whatever its levels, families or seed, as before the toys existed) unless
    `tiny_layers` asks for another depth; a toy task's own model (memrl.policy.tiny_toys) otherwise.
    """
    if name_or_path == "tiny":
        cache = Path(cache_dir) if cache_dir else None
        if synthetic is None or (synthetic.task == "arithmetic" and tiny_layers is None):
            return str(ensure_tiny_model(cache))
        return str(ensure_toy_model(synthetic, tiny_layers, cache))
    path = Path(name_or_path).expanduser()
    if path.exists():
        found = resolve_checkpoint(path)
        if found is None:
            raise UserError(
                f"{path} is neither a Hugging Face model folder (no config.json) nor a memrl run or checkpoint directory"
            )
        return str(found)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise UserError(f"model path {name_or_path} does not exist")
    return name_or_path  # a hub id


def pick_device(device: str = "auto") -> str:
    """auto -> "cuda" when a GPU is visible, else "cpu"."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={device} but no CUDA GPU is visible; use model.device=cpu")
    return device


def pick_dtype(dtype: str, device: str) -> Any:
    """auto -> bfloat16 on a GPU that supports it, else float32."""
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise UserError(f"unknown model.dtype={dtype}; valid: auto, float32, bfloat16, float16") from None


def load_tokenizer(path: str, trust_remote_code: bool = False, revision: str | None = None) -> Any:
    """The tokenizer, left-padded (generation appends on the right) with a pad token."""
    tok = _from_pretrained(AutoTokenizer, path, trust_remote_code=trust_remote_code, revision=revision)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(
    model_cfg: ModelConfig, cache_dir: str | os.PathLike | None = None, synthetic: Any = None
) -> tuple[Any, Any, str]:
    """Load model and tokenizer as configured (`synthetic`: `data.synthetic`, which picks the tiny model).

    Returns:
        (model in eval mode on its device, tokenizer, the resolved path or hub id)
    """
    # our own progress bar and log line say what is loading; transformers' per-weight bar is noise
    hf_logging.disable_progress_bar()
    path = resolve_model_path(str(model_cfg.name_or_path), cache_dir, synthetic, model_cfg.tiny_layers)
    device = pick_device(str(model_cfg.device))
    dtype = pick_dtype(str(model_cfg.dtype), device)
    tokenizer = load_tokenizer(path, bool(model_cfg.trust_remote_code), model_cfg.revision)
    model = _from_pretrained(
        AutoModelForCausalLM,
        path,
        dtype=dtype,
        trust_remote_code=bool(model_cfg.trust_remote_code),
        revision=model_cfg.revision,
    )
    model.to(device).eval()
    log.info(
        "loaded %s (%s, %s, %.2fM parameters)", path, device, dtype, sum(p.numel() for p in model.parameters()) / 1e6
    )
    return model, tokenizer, path


def _from_pretrained(cls: Any, path: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained` with a clear message when a hub model is not available offline."""
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as e:
        if Path(path).exists():
            raise UserError(f"cannot load {path}: {e}") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (
            "the hub is offline here (HF_HUB_OFFLINE=1)"
            if offline
            else "it is not in the local Hugging Face cache and the hub could not be reached"
        )
        raise UserError(
            f"model '{path}' not found: {hint}. Download it on a machine with network "
            f"(`huggingface-cli download {path} --local-dir DIR`), copy DIR here and set model.name_or_path=DIR; "
            "or use model=tiny."
        ) from None
