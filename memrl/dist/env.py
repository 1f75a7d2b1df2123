"""Where this process stands in a torchrun launch, decided from the environment alone (no collective).

torchrun exports RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and GROUP_RANK (the node) to every
worker; memrl reads them here. `dist.strategy=fsdp2` needs them: without torchrun it is a `UserError` that
prints the torchrun command to use.

One run directory for all ranks: Hydra names the run directory from `${now:...}` in each process, so ranks
started a second apart would each create their own. `agree_launch_time()` gives every rank rank 0's clock
reading, through the key-value store torchrun's agent already runs (no process group needed, so it works
before Hydra composes the config); `launch_time_resolver` is its OmegaConf resolver, for Hydra's
`run.dir` in place of `now` (docs/scaling.md, "One run directory").
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from memrl.errors import UserError

# torchrun's variables; RANK and WORLD_SIZE decide whether this process is one of several
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
LAUNCH_TIME_KEY = "memrl/launch_time"
LAUNCH_TIME_ENV = "MEMRL_LAUNCH_TIME"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the launch (one process without torchrun: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    # the node's index (torchrun's GROUP_RANK)
    node_rank: int = 0
    # launched by torchrun (or anything that sets its variables)
    launched: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory's shared files."""
        return self.rank == 0

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // max(1, self.local_world_size))


def _int_var(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


def detect_env() -> DistEnv:
    """The torchrun environment of this process, or rank 0 of 1 without one."""
    launched = all(v in os.environ for v in _TORCHRUN_VARS)
    if not launched:
        return DistEnv()
    rank, world = _int_var("RANK", 0), _int_var("WORLD_SIZE", 1)
    local_rank = _int_var("LOCAL_RANK", 0)
    local_world = _int_var("LOCAL_WORLD_SIZE", world)
    if not 0 <= rank < world or not 0 <= local_rank < local_world:
        raise UserError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}, "
            f"LOCAL_WORLD_SIZE={local_world}"
        )
    return DistEnv(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        local_world_size=local_world,
        node_rank=_int_var("GROUP_RANK", rank // max(1, local_world)),
        launched=True,
    )


def torchrun_command(argv: Sequence[str] | None = None, nproc: str = "<GPUs per node>") -> str:
    """The torchrun command line that runs this same memrl command on one node."""
    argv = list(sys.argv if argv is None else argv)
    prog = os.path.basename(argv[0]) if argv else "memrl"
    if prog in ("__main__.py", "cli.py") or prog.startswith("python"):
        prog = "memrl"
    args = " ".join(shlex.quote(a) for a in argv[1:])
    return f"torchrun --standalone --nproc_per_node={nproc} --no-python {prog} {args}".rstrip()


def require_launch(strategy: str, env: DistEnv | None = None, argv: Sequence[str] | None = None) -> DistEnv:
    """The environment, checked against `dist.strategy`: fsdp2 needs torchrun.

    Raises:
        UserError: strategy fsdp2 in a process not started by torchrun (the message gives the command).
    """
    env = env or detect_env()
    strategy = getattr(strategy, "value", strategy)
    if strategy == "fsdp2" and not env.launched:
        raise UserError(
            "dist.strategy=fsdp2 needs one process per device, started by torchrun (RANK, WORLD_SIZE and "
            "LOCAL_RANK are not set). Run:\n  "
            + torchrun_command(argv)
            + "\nAcross nodes: --nnodes=<N> --rdzv-backend=c10d --rdzv-endpoint=<host>:<port> instead of "
            "--standalone (docs/scaling.md)"
        )
    return env


def agree_launch_time(env: DistEnv | None = None, timeout_s: float = 600.0) -> _dt.datetime:
    """Rank 0's clock reading at launch, the same on every rank (this process's own time without torchrun).

    Rank 0 publishes its time under `memrl/launch_time/<restart count>` in the store torchrun's agent runs
    at MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True); the others wait for it, at most
    `timeout_s`. `$MEMRL_LAUNCH_TIME` (format `%Y-%m-%dT%H:%M:%S.%f`), when set, wins on every rank.
    """
    preset = os.environ.get(LAUNCH_TIME_ENV)
    if preset:
        try:
            return _dt.datetime.strptime(preset, TIME_FORMAT)
        except ValueError:
            raise UserError(f"{LAUNCH_TIME_ENV}={preset!r} does not match {TIME_FORMAT}") from None
    env = env or detect_env()
    now = _dt.datetime.now()
    if not env.launched or env.world_size == 1:
        return now
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        raise UserError(
            f"cannot agree on one run directory: this launcher runs no torchrun agent store. Launch with "
            f"torchrun, or set {LAUNCH_TIME_ENV} (e.g. $(date +%Y-%m-%dT%H:%M:%S.000000)) on every rank"
        )
    from torch.distributed import TCPStore

    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=_dt.timedelta(seconds=timeout_s),
    )
    key = f"{LAUNCH_TIME_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if env.rank == 0:
        store.set(key, now.strftime(TIME_FORMAT))
    return _dt.datetime.strptime(store.get(key).decode(), TIME_FORMAT)


@functools.cache
def _launch_time() -> _dt.datetime:
    return agree_launch_time()


def launch_time_resolver(pattern: str) -> str:
    """An OmegaConf resolver like Hydra's `now`: the agreed launch time, formatted (one agreement per process).

    Register it with `use_cache=True`, as Hydra registers `now`
    (`OmegaConf.register_new_resolver("memrl_launch_time", launch_time_resolver, use_cache=True)`: a sweep's
    folder, resolved once per job, stays one folder) and name the
    run directory `${paths.output_root}/${task_name}/${memrl_launch_time:%Y-%m-%d_%H-%M-%S}`: every rank of a
    torchrun launch resolves the same folder; one process gets its own clock, as with `now`.
    """
    env = detect_env()
    if os.environ.get(LAUNCH_TIME_ENV) or (env.launched and env.world_size > 1):
        return _launch_time().strftime(pattern)
    # one process: this process's clock, as Hydra's `now` (cached per config by the registration, so several
    # runs in one process differ and one sweep keeps one folder)
    return _dt.datetime.now().strftime(pattern)
