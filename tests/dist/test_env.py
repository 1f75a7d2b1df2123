"""memrl.dist.env: the torchrun environment, the error without torchrun, one launch time for every rank;
and the `dist` config group against its schema."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from memrl.apps import CONF_DIR
from memrl.config.schema import DistBackend, DistConfig, DistDtype, DistStrategy
from memrl.dist.env import (
    DistEnv,
    agree_launch_time,
    detect_env,
    launch_time_resolver,
    require_launch,
    torchrun_command,
)
from memrl.errors import UserError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MEMRL_LAUNCH_TIME")


@pytest.fixture
def no_torchrun(monkeypatch):
    for v in TORCHRUN_VARS:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def test_detect_env_without_torchrun(no_torchrun):
    assert detect_env() == DistEnv()
    assert detect_env().is_main and not detect_env().launched


def test_detect_env_under_torchrun(no_torchrun):
    for k, v in dict(RANK="5", WORLD_SIZE="8", LOCAL_RANK="1", LOCAL_WORLD_SIZE="4", GROUP_RANK="1").items():
        no_torchrun.setenv(k, v)
    env = detect_env()
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.node_rank) == (5, 8, 1, 4, 1)
    assert env.launched and not env.is_main and env.num_nodes == 2
    no_torchrun.setenv("RANK", "9")
    with pytest.raises(UserError, match="inconsistent torchrun environment: RANK=9, WORLD_SIZE=8"):
        detect_env()


def test_fsdp2_without_torchrun_prints_the_command(no_torchrun):
    argv = ["/venv/bin/memrl", "train", "experiment=paper/meds_table1", "dist=fsdp2"]
    with pytest.raises(UserError) as e:
        require_launch(DistStrategy.fsdp2, argv=argv)
    msg = str(e.value)
    assert "dist.strategy=fsdp2 needs one process per device, started by torchrun" in msg
    assert (
        "torchrun --standalone --nproc_per_node=<GPUs per node> --no-python memrl train "
        "experiment=paper/meds_table1 dist=fsdp2" in msg
    )
    assert "--rdzv-backend=c10d" in msg
    # strategy none runs as today, torchrun or not
    assert require_launch("none") == DistEnv()
    assert (
        torchrun_command(["memrl", "eval"], nproc="8")
        == "torchrun --standalone --nproc_per_node=8 --no-python memrl eval"
    )


def test_launch_time_without_torchrun(no_torchrun):
    before = dt.datetime.now()
    assert before <= agree_launch_time() <= dt.datetime.now()
    no_torchrun.setenv("MEMRL_LAUNCH_TIME", "2026-12-03T10:00:00.000000")
    assert agree_launch_time() == dt.datetime(2026, 12, 3, 10)
    no_torchrun.setenv("MEMRL_LAUNCH_TIME", "yesterday")
    with pytest.raises(UserError, match="MEMRL_LAUNCH_TIME='yesterday' does not match"):
        agree_launch_time()


def test_launch_time_resolver_is_fixed_for_the_process(no_torchrun):
    from omegaconf import OmegaConf

    from memrl.dist import env as env_mod

    env_mod._launch_time.cache_clear()
    no_torchrun.setenv("MEMRL_LAUNCH_TIME", "2026-12-03T10:00:00.000000")
    try:
        if not OmegaConf.has_resolver("memrl_launch_time_test"):
            OmegaConf.register_new_resolver("memrl_launch_time_test", launch_time_resolver)
        node = OmegaConf.create({"dir": "outputs/train/${memrl_launch_time_test:%Y-%m-%d_%H-%M-%S}"})
        assert node.dir == "outputs/train/2026-12-03_10-00-00"
        no_torchrun.setenv("MEMRL_LAUNCH_TIME", "2026-12-04T10:00:00.000000")
        assert launch_time_resolver("%d") == "03"  # agreed once per process
    finally:
        env_mod._launch_time.cache_clear()


@pytest.mark.timeout(600)
def test_every_rank_gets_rank0s_launch_time(dl, tmp_path):
    dl.ok(dl.launch(tmp_path, "--launch-time"))
    times = [(tmp_path / f"launch_time.rank{r}").read_text() for r in (0, 1)]
    assert times[0] == times[1]
    dt.datetime.fromisoformat(times[0])


@pytest.mark.parametrize("name", ["none", "fsdp2"])
def test_dist_group_files_match_the_schema(name):
    node = OmegaConf.merge(OmegaConf.structured(DistConfig), OmegaConf.load(Path(CONF_DIR) / "dist" / f"{name}.yaml"))
    cfg = OmegaConf.to_object(node)
    assert cfg.strategy == DistStrategy(name)
    assert cfg.backend == DistBackend.auto
    assert cfg.mixed_precision.param_dtype == DistDtype.auto
    assert cfg.timeout_s > 0


def test_dist_schema_rejects_unknown_values():
    from omegaconf.errors import ValidationError

    with pytest.raises(ValidationError, match="fsdp3"):
        OmegaConf.merge(OmegaConf.structured(DistConfig), {"strategy": "fsdp3"})


@pytest.mark.parametrize("experiment", ["paper/meds_qwen3-8b", "paper/memreward_qwen2.5-3b"])
def test_a_paper_experiment_composes_with_fsdp2(compose_eval, experiment):
    cfg = compose_eval(f"experiment={experiment}", "dist=fsdp2", "dist.mesh.replicate=2", config_name="train")
    assert cfg.dist.strategy.value == "fsdp2" and cfg.dist.mesh.replicate == 2
    assert compose_eval(config_name="train").dist.strategy.value == "none"  # the default: one process


def test_memrl_train_with_fsdp2_without_torchrun_prints_the_command(dl, tmp_path):
    """Refused before any data or model is loaded, exit 2, with the torchrun command to use."""
    import subprocess
    import sys

    env = {k: v for k, v in dl.env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "memrl.cli", "train", "dist=fsdp2", f"hydra.run.dir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, cwd=dl.repo, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "torchrun --standalone --nproc_per_node=<GPUs per node> --no-python memrl train dist=fsdp2" in out.stderr
