"""The run directory shared by all stages: provenance (`manifest.json`) and stage status.

Layout (docs/run-directory.md): `.hydra/` (Hydra's configs plus `resolved.yaml`), `manifest.json`, `memory/`,
`graph/`, `gnn/`, `train/`, `eval/`, `memrl.log`. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from memrl.utils.io import atomic_write_json, atomic_write_text

# Packages whose versions decide what a run computes.
TRACKED_PACKAGES = (
    "memrl",
    "torch",
    "transformers",
    "tokenizers",
    "vllm",
    "torch_geometric",
    "hdbscan",
    "sentence-transformers",
    "math-verify",
    "hydra-core",
    "omegaconf",
    "numpy",
    "wandb",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the git checkout that holds memrl's source (None outside git)."""
    path = Path(path) if path else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def device_info() -> dict[str, Any]:
    """What the run computes on."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


@dataclass
class RunDir:
    """One run directory. Stages read and write artifacts only through its paths."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def path(self, *parts: str) -> Path:
        """A path inside the run directory; parent folders are created."""
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def read_manifest(self) -> dict[str, Any]:
        if self.manifest_path.exists():
            return json.loads(self.manifest_path.read_text())
        return {}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    def init_manifest(self, *, seed: int, command: list[str], overrides: list[str], mode: str) -> dict[str, Any]:
        """Write (or refresh, on resume) the provenance part of manifest.json; keeps stage status."""
        manifest = self.read_manifest()
        manifest.update(
            {
                "command": " ".join(command),
                "argv": command,
                "cwd": os.getcwd(),
                "overrides": overrides,
                "hydra_mode": mode,
                "seed": seed,
                "git": git_state(),
                "packages": package_versions(),
                "device": device_info(),
            }
        )
        manifest.setdefault("created", _now())
        manifest.setdefault("stages", {})
        self.write_manifest(manifest)
        return manifest

    def set_stage(self, stage: str, status: str, **fields: Any) -> None:
        """Record a stage's status ("running", "done", "failed", "interrupted") in manifest.json."""
        manifest = self.read_manifest()
        entry = manifest.setdefault("stages", {}).setdefault(stage, {})
        if status == "running":
            entry["started"] = _now()
            entry["_t0"] = time.time()
            entry.pop("error", None)
        else:
            entry["finished"] = _now()
            if "_t0" in entry:
                entry["seconds"] = round(time.time() - entry["_t0"], 2)
        entry["status"] = status
        entry.update(fields)
        self.write_manifest(manifest)

    def write_resolved_config(self, cfg: Any) -> None:
        """`.hydra/resolved.yaml`: the config with every interpolation resolved."""
        from omegaconf import OmegaConf

        atomic_write_text(self.path(".hydra", "resolved.yaml"), OmegaConf.to_yaml(cfg, resolve=True))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def original_command() -> list[str]:
    """The command line as the user typed it (the CLI rewrites sys.argv before Hydra parses it)."""
    saved = os.environ.get("MEMRL_COMMAND")
    return json.loads(saved) if saved else list(sys.argv)
