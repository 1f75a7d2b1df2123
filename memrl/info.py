"""`memrl info`: versions, device, and where data, cache and outputs live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from memrl.data.loaders import BUNDLED, default_data_dir
from memrl.policy.tiny import default_cache_dir, ensure_tiny_model, tiny_model_dir
from memrl.run_dir import device_info, git_state, package_versions


def collect_info(build_tiny: bool = False) -> dict[str, Any]:
    """Everything `memrl info` prints, as a dict."""
    cache = default_cache_dir()
    tiny = ensure_tiny_model(cache) if build_tiny else tiny_model_dir(cache)
    data_dir = default_data_dir()
    return {
        "packages": package_versions(),
        "git": git_state(),
        "device": device_info(),
        "paths": {
            "data_dir": str(data_dir),
            "bundled_benchmarks": sorted(n for n in BUNDLED if (data_dir / BUNDLED[n].folder).exists()),
            "cache_dir": str(cache),
            "tiny_model": str(tiny),
            "tiny_model_built": (Path(tiny) / "build_info.json").exists(),
            "output_root": str(Path(os.environ.get("MEMRL_OUTPUT_DIR", "outputs")).resolve()),
        },
        "env": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "WANDB_MODE", "MEMRL_CACHE", "CUDA_VISIBLE_DEVICES")},
    }


def print_info(data: dict[str, Any]) -> None:
    """Print `collect_info()` as rich tables."""
    console = Console()
    t = Table(title="memrl", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    for name, version in data["packages"].items():
        t.add_row(name, version or "[dim]not installed[/dim]")
    git = data["git"]
    t.add_row("git", f"{git['commit'] or 'not a git checkout'}{' (dirty)' if git.get('dirty') else ''}")
    dev = data["device"]
    gpus = ", ".join(dev.get("gpus", [])) or "none"
    t.add_row(
        "device",
        f"cuda={dev['cuda_available']} gpus={gpus} cpus={dev['cpu_count']} torch_threads={dev['torch_threads']}",
    )
    for k, v in data["paths"].items():
        t.add_row(k, ", ".join(v) if isinstance(v, list) else str(v))
    for k, v in data["env"].items():
        t.add_row(k, v or "[dim]unset[/dim]")
    console.print(t)
