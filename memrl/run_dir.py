"""The run directory shared by all stages: provenance (`manifest.json`) and stage status.

Layout (docs/run-directory.md): `.hydra/` (Hydra's configs plus `resolved.yaml`), `manifest.json`, `memory/`,
`graph/`, `gnn/`, `train/`, `eval/`, `memrl.log`. Every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from memrl.errors import UserError
from memrl.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

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
        atomic_write_text(self.path(".hydra", "resolved.yaml"), OmegaConf.to_yaml(cfg, resolve=True))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def original_command() -> list[str]:
    """The command line as the user typed it (the CLI rewrites sys.argv before Hydra parses it)."""
    saved = os.environ.get("MEMRL_COMMAND")
    return json.loads(saved) if saved else list(sys.argv)


# ---------------------------------------------------------------------------------------------------
# Reuse of a run directory: every artifact records the config that built it (docs/run-directory.md)


class ConfigMismatch(UserError):
    """A run directory's artifact was built with another config than the current one (the run is refused)."""


# Keys of the resolved config that do not change what a run computes, so they are never compared (dotted
# prefixes). Everything else is compared: a key that can change a number the run reports is in the record.
NOT_RESULTS = (
    "hydra",  # Hydra's own node (present only in composed test configs)
    "paths",  # where data, caches and outputs live; data files under paths.data_dir are compared as written
    "task_name",  # names the run directory
    "logger",  # where metrics are reported (wandb project, mode, tags)
    "trainer.progress",  # progress bars
    "eval.plot",  # a figure
    "trainer.resume",  # how this command starts (continue or start over), not what it computes
    # how often checkpoints are written and kept: a resumed run computes what the uninterrupted one would
    "trainer.save_freq",
    "trainer.max_ckpt_to_keep",
    # the length of the run, compared on its own (check_steps): more steps continue a finished run (the learning
    # rate is constant after warm-up and validation does not move the training RNG, so steps 1..N are those
    # of the shorter run); fewer steps than the run has trained are refused
    "trainer.total_steps",
    "trainer.total_epochs",
    # processes, memory and speed: the same computation, at most rounded differently (like the thread count)
    "grading.num_workers",
    "grading.sandbox.workers",
    "trainer.micro_batch_size",
    "trainer.gradient_checkpointing",
    "reward.memreward.encoder_batch_size",
    "rollout.gpu_memory_utilization",
    "rollout.kv_cache_gb",
    "rollout.enforce_eager",
    "rollout.sleep",
    "trainer.checkpoint.async_save",
    "dist.timeout_s",
    "dist.cpu_offload",
    "dist.reshard_after_forward",
    # a path: the copied warm-up parts carry the record of the config that built them, which is checked instead
    "reward.memreward.warmup_from",
)

# What each warm-up part depends on (prefixes); the keys above are left out of these too.
_MEMORY_KEYS = (
    "model",
    "data.train_set",
    "data.val_set",
    "data.synthetic",
    "data.answer_format",
    "rollout.engine",
    "rollout.batch_size",
    "rollout.top_k",
    "rollout.max_new_tokens",
    "rollout.stop",
    "rollout.max_model_len",
    "rollout.dtype",
    "grading",
    "reward.label_ratio",
    "reward.label_seed",
    "reward.memreward.warmup",
    "reward.memreward.val_source",
    "reward.memreward.val_fraction",
    "reward.memreward.val_limit",
    "reward.memreward.report_queries",
)
_GRAPH_KEYS = (
    *_MEMORY_KEYS,
    "reward.memreward.encoder_path",
    "reward.memreward.k",
    "reward.memreward.direction",
    "reward.memreward.think_k",
)
_GNN_KEYS = (*_GRAPH_KEYS, "reward.memreward.gnn", "reward.memreward.threshold", "reward.memreward.baselines")
# the parts in build order: a part rebuilt makes every later one stale; train covers train/ and eval/
PART_KEYS: dict[str, tuple[str, ...] | None] = {
    "memory": _MEMORY_KEYS,
    "graph": _GRAPH_KEYS,
    "gnn": _GNN_KEYS,
    "train": None,  # every key not in NOT_RESULTS
}
WARMUP_PARTS = ("memory", "graph", "gnn")
# where a finished part records its config (the warm-up: inside its done-file, so a copy carries it)
PART_DONE = {"memory": "memory/done.json", "graph": "graph/done.json", "gnn": "gnn/report.json"}
TRAIN_RECORD = "train/built_with.json"
RECORD_KEY = "built_with"
# the parts each command uses, in build order
STAGE_PARTS = {
    "rollout": ("memory",),
    "graph": ("memory", "graph"),
    "gnn": ("memory", "graph", "gnn"),
    "train": ("memory", "graph", "gnn", "train"),
}
START_OVER = "--force (trainer.resume=disable)"


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _leaf(value: Any) -> Any:
    value = getattr(value, "value", value)  # an Enum
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def config_values(cfg: Any, part: str = "train", every_group: bool = False) -> dict[str, Any]:
    """The result-changing keys of `part` in `cfg`, flattened ("trainer.lr": 0.0001), values resolved.

    Interpolations of `paths.*` (data files under the data folder) are kept as written, so a moved data or cache
    folder is not a new config. Groups a run does not use are left out (unless `every_group`):
    reward.memreward.* unless reward=memreward, meds.* (but meds.enable) unless MEDS is on.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        keys = list(node.keys()) if isinstance(node, DictConfig) else list(range(len(node)))
        if isinstance(node, ListConfig) and all(
            not isinstance(node._get_node(k), (DictConfig, ListConfig)) for k in keys
        ):
            # a list of scalars is one value
            out[prefix] = [_leaf(v) for v in OmegaConf.to_container(node, resolve=True, enum_to_str=True)]
            return
        for k in keys:
            full = f"{prefix}.{k}" if prefix else str(k)
            if _matches(full, NOT_RESULTS):
                continue
            if isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, k):
                raw = str(node._get_node(k)._value())
                if "paths." in raw or "hydra:" in raw:
                    out[full] = raw
                    continue
            try:
                value = node[k]
            except MissingMandatoryValue:
                value = "???"
            if isinstance(value, (DictConfig, ListConfig)):
                walk(value, full)
            else:
                out[full] = _leaf(value)

    walk(cfg, "")
    if not every_group and out.get("reward.name") != "memreward":
        out = {k: v for k, v in out.items() if not k.startswith("reward.memreward.")}
    if not (every_group or out.get("meds.enable", False)):
        out = {k: v for k, v in out.items() if not k.startswith("meds.") or k == "meds.enable"}
    prefixes = PART_KEYS[part]
    if prefixes is not None:
        out = {k: v for k, v in out.items() if _matches(k, prefixes)}
    return out


def config_record(cfg: Any, part: str = "train") -> dict[str, Any]:
    """{"hash": sha256 of the part's result-changing keys, "config": those keys} (stored with the artifact)."""
    import hashlib

    values = config_values(cfg, part)
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    return {"hash": digest, "config": values}


def record_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """ "key: old -> new" for every key whose value differs between two records."""
    a, b = old.get("config", {}), new.get("config", {})
    # compared as stored (JSON), as the hash is: 1 and 1.0 differ
    shown = {k: (json.dumps(a.get(k, "(not set)")), json.dumps(b.get(k, "(not set)"))) for k in set(a) | set(b)}
    return [f"{k}: {x} -> {y}" for k, (x, y) in sorted(shown.items()) if x != y]


def added_at_default(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The keys of record `new` that record `old` lacks and whose value in `new` is the schema's default
    (memrl/config/schema.py's TrainAppConfig): settings added to memrl after `old` was stored, left as they were."""
    from memrl.config.schema import TrainAppConfig

    a, b = old.get("config", {}), new.get("config", {})
    defaults = config_values(OmegaConf.structured(TrainAppConfig), every_group=True)
    return sorted(k for k in set(b) - set(a) if k in defaults and json.dumps(b[k]) == json.dumps(defaults[k]))


def _resume_mode(cfg: Any) -> str:
    trainer = cfg.get("trainer") if hasattr(cfg, "get") else None
    mode = "auto" if trainer is None else str(trainer.get("resume", "auto"))
    if mode not in ("auto", "disable"):
        raise UserError(
            f"unknown trainer.resume={mode}; valid: auto (reuse what this run directory holds when it was built "
            "with the same config, refuse otherwise), disable (start over, what --force sets)"
        )
    return mode


def _train_has_results(root: Path) -> bool:
    train, ev = root / "train", root / "eval"
    has_train = train.is_dir() and any(p.name != Path(TRAIN_RECORD).name for p in train.iterdir())
    return has_train or (ev.is_dir() and any(ev.iterdir()))


def _legacy_record(root: Path, part: str) -> dict[str, Any] | None:
    """For a run directory made before records existed: the config of its last run (.hydra/resolved.yaml)."""
    path = root / ".hydra" / "resolved.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    return config_record(OmegaConf.load(path), part)


def read_record(root: Path, part: str) -> dict[str, Any] | None:
    """The stored record of a finished part (None: none stored)."""
    if part == "train":
        path = root / TRAIN_RECORD
        return json.loads(path.read_text()) if path.is_file() else None
    done = root / PART_DONE[part]
    return json.loads(done.read_text()).get(RECORD_KEY) if done.is_file() else None


def write_record(root: Path, part: str, record: dict[str, Any]) -> None:
    if part == "train":
        atomic_write_json(root / TRAIN_RECORD, record)
        return
    done = root / PART_DONE[part]
    atomic_write_json(done, {**json.loads(done.read_text()), RECORD_KEY: record})


def part_done(root: Path, part: str) -> bool:
    return _train_has_results(root) if part == "train" else (root / PART_DONE[part]).is_file()


def warmup_source(cfg: Any) -> Path | None:
    """reward.memreward.warmup_from of a MemReward config (None: the run builds its own warm-up)."""
    reward = cfg.get("reward") if hasattr(cfg, "get") else None
    if reward is None or str(reward.get("name", "")) != "memreward" or not reward.memreward.get("warmup_from"):
        return None
    return Path(str(reward.memreward.warmup_from)).expanduser()


def expected_record(cfg: Any, part: str) -> dict[str, Any] | None:
    """The record `part` must carry to be reused by this config. With reward.memreward.warmup_from, the warm-up
    is another run's: its parts must carry that run's records (None when it has none, or is not finished)."""
    source = warmup_source(cfg) if part in WARMUP_PARTS else None
    if source is None:
        return config_record(cfg, part)
    return read_record(source, part) if (source / PART_DONE[part]).is_file() else None


def remove_parts(root: Path, first: str) -> list[str]:
    """Remove `first` and every part built after it (train/ with eval/); returns what was removed."""
    import shutil

    parts = list(PART_KEYS)
    removed = []
    for part in parts[parts.index(first) :]:
        for folder in ("train", "eval") if part == "train" else (part,):
            if (root / folder).exists():
                shutil.rmtree(root / folder)
                removed.append(f"{folder}/")
    return removed


def reusable(run_dir: RunDir, cfg: Any, part: str) -> bool:
    """Whether a finished `part` of the run directory may be reused by `cfg`.

    False when it is not finished. A part built with another config is refused (ConfigMismatch, naming the
    differing keys) or, with trainer.resume=disable (--force), removed with every part built after it, so it is
    rebuilt. A part without a record (made before memrl stored one) is compared with .hydra/resolved.yaml, the
    config of the directory's last run, and, when that agrees or is absent, adopts the current config's record.
    """
    root = Path(run_dir.root)
    if not part_done(root, part):
        return False
    want = expected_record(cfg, part)
    if want is None:
        log.warning("%s: cannot check the config of %s (its warm-up source has no record); reused", root, part)
        return True
    have = read_record(root, part)
    legacy = have is None
    if legacy:
        # made by a memrl that stored no record: compared with the config of the directory's last run, whose
        # interpolations are resolved (so the keys this config writes as `${paths...}` are left out)
        have = _legacy_record(root, part) or want
        unresolved = {k for k, v in want["config"].items() if isinstance(v, str) and "${" in v}
        diff = [d for d in record_diff(have, want) if d.split(":", 1)[0] not in unresolved]
    else:
        diff = [] if have.get("hash") == want["hash"] else record_diff(have, want)
        added = added_at_default(have, want) if diff else []
        if added:
            log.info(
                "%s: %s/ was recorded before memrl had %s; at the schema's default here, which is what that run "
                "computed with, so not a difference",
                root,
                part,
                ", ".join(added),
            )
            diff = [d for d in diff if d.split(":", 1)[0] not in added]
    if not diff:
        if legacy:
            log.warning("%s: %s has no config record (made by an older memrl); adopting this run's", root, part)
            write_record(root, part, want)
        return True
    folder = "train/ and eval/" if part == "train" else f"{part}/"
    if _resume_mode(cfg) == "disable":
        removed = remove_parts(root, part)
        log.warning(
            "%s: %s built with another config (%s); starting over: removed %s",
            root,
            folder,
            "; ".join(diff),
            ", ".join(removed),
        )
        return False
    source = warmup_source(cfg) if part in WARMUP_PARTS else None
    than = f" than reward.memreward.warmup_from={source}'s" if source else ""
    raise ConfigMismatch(
        f"{root}: {folder} {'were' if part == 'train' else 'was'} built with another config{than}; differing "
        f"keys (then -> now): {'; '.join(diff)}. To continue that run, drop those overrides "
        f"(`memrl train --resume {root}` reuses its own); to start over in this directory (deleting {folder} "
        f"and whatever was built from it), add {START_OVER}; or use a new run directory"
    )


def check_reuse(run_dir: RunDir, cfg: Any, stage: str) -> None:
    """Before a command works in a run directory: refuse (ConfigMismatch) when a part it would reuse was built
    with another result-changing config, or start over with trainer.resume=disable (--force: train/ and eval/
    are always removed, warm-up parts only when built with another config, as the same config rebuilds them
    identically). A fresh train/ records the config it is built with."""
    if stage not in STAGE_PARTS:
        return
    root = Path(run_dir.root)
    mode = _resume_mode(cfg)
    memreward = str(cfg.get("reward", {}).get("name", "")) == "memreward"
    parts = [p for p in STAGE_PARTS[stage] if p == "train" or memreward]
    if stage == "train" and mode == "disable":
        removed = remove_parts(root, "train")
        if removed:
            log.warning("%s: starting over (trainer.resume=disable): removed %s", root, ", ".join(removed))
    for part in parts:
        reusable(run_dir, cfg, part)
    if stage == "train":
        from memrl.rl.checkpoint import latest_checkpoint

        if latest_checkpoint(root / "train") is None and _train_has_results(root):
            # a run killed before its first checkpoint: nothing to continue from, so it starts clean
            removed = remove_parts(root, "train")
            log.info("%s: no checkpoint to continue from; removed %s", root, ", ".join(removed))
        if cfg.trainer.get("total_epochs") is None:  # else the step count needs the data (memrl train checks it)
            check_steps(run_dir, int(cfg.trainer.total_steps))
        write_record(root, "train", config_record(cfg, "train"))


def check_steps(run_dir: RunDir, total_steps: int) -> int:
    """The step of the run directory's last checkpoint (0: none); refuses a run asked to stop before it."""
    from memrl.rl.checkpoint import latest_checkpoint

    latest = latest_checkpoint(Path(run_dir.root) / "train")
    done = 0 if latest is None else int(latest.name.rsplit("_", 1)[-1])
    if done > int(total_steps):
        raise ConfigMismatch(
            f"{run_dir.root}: its run has trained {done} steps (train/{latest.name}), but this config asks for "
            f"{total_steps} (trainer.total_steps / trainer.total_epochs); more steps continue a run, fewer cannot. "
            f"To start over in this directory add {START_OVER}; or use a new run directory"
        )
    return done


HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml", "resolved.yaml")
ACCEPTED = "accepted"


def snapshot(run_dir: RunDir) -> dict[str, bytes | None]:
    """What a refused command must put back: manifest.json and the last accepted run's `.hydra` files (Hydra
    rewrites `.hydra/` before any memrl code runs; report and --resume read overrides.yaml)."""
    root = Path(run_dir.root)
    files = {"manifest.json": root / "manifest.json"}
    files.update({f".hydra/{n}": root / ".hydra" / ACCEPTED / n for n in HYDRA_FILES})
    return {name: (p.read_bytes() if p.is_file() else None) for name, p in files.items()}


def accept_hydra_files(run_dir: RunDir) -> None:
    """Keep a copy of this run's `.hydra` files in `.hydra/accepted/`: what a later refused command restores."""
    from memrl.utils.io import atomic_write_bytes

    hydra = Path(run_dir.root) / ".hydra"
    for name in HYDRA_FILES:
        if (hydra / name).is_file():
            atomic_write_bytes(run_dir.path(".hydra", ACCEPTED, name), (hydra / name).read_bytes())


def restore(run_dir: RunDir, saved: dict[str, bytes | None]) -> None:
    """Put back what `snapshot` saved, so a refused command leaves the run directory as it found it."""
    from memrl.utils.io import atomic_write_bytes

    root = Path(run_dir.root)
    if saved["manifest.json"] is not None:
        atomic_write_bytes(root / "manifest.json", saved["manifest.json"])
    if saved[".hydra/overrides.yaml"] is None and saved["manifest.json"] is not None:
        # a directory from before `.hydra/accepted/`: its last run's overrides are in the manifest
        import yaml

        overrides = json.loads(saved["manifest.json"]).get("overrides")
        if overrides is not None:
            saved = {**saved, ".hydra/overrides.yaml": yaml.safe_dump(overrides).encode()}
    for name in HYDRA_FILES:
        data = saved[f".hydra/{name}"]
        if data is None:
            (root / ".hydra" / ACCEPTED / name).unlink(missing_ok=True)
        else:
            atomic_write_bytes(root / ".hydra" / name, data)
            atomic_write_bytes(root / ".hydra" / ACCEPTED / name, data)
