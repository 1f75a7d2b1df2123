"""Run untrusted programs (model-written code) with their tests, isolated from the host.

`SandboxPool.run(jobs)` runs each `Job` (a program and its test steps) in a fresh process group and
returns a `Verdict` per job: passed, failed (with the first failing assert), error, timeout or
resource_limit. `runner.py` is the parent side, `harness.py` the child side; docs/code-sandbox.md
lists each defence and the adversarial cases the tests run.

What each program gets, with namespaces (`isolation="namespaces"`, chosen by "auto" where
`unshare` of user or mount namespaces is allowed):

- new mount, network, pid, ipc and uts namespaces; a fresh root holding only read-only binds of
  /usr, /lib*, /bin, /sbin, the interpreter's library folders and /etc/ld.so.cache, five devices,
  an empty /proc, and an empty size-limited tmpfs /tmp as the working directory (gone with the
  namespace); the host's home folders, /tmp, checkpoints and credentials are not there;
- no network: a new network namespace has only a loopback that is down; sockets are also refused;
- no privileges: root becomes nobody; every capability is dropped and no_new_privs is set;
- PID 1 of the pid namespace is a trusted init that exits when the program does, and the kernel
  then kills every process left in the namespace (daemonised grandchildren included);
- rlimits: CPU, address space, processes (per sandbox, thanks to its own user namespace), open
  files, file size, no core dumps; the parent kills the whole process group at the wall deadline;
- a scrubbed environment (no inherited variables), stdin closed, output capped;
- an audit hook (PEP 578, cannot be removed) refusing frames, gc introspection, tracing, ctypes,
  /proc, fork/exec/spawn, sockets, threads, kill, symlinks and signal handlers; with private
  copies of builtins for the harness's own code after the program ran.

Verdict integrity: the report line must carry a 128-bit nonce the parent sent on a pipe that the
harness reads and closes before the program runs; exiting early writes no report (an error).

Residual risks (honest list):

- The program and its tests share one interpreter, so the nonce is in the process's memory. The
  audit hook closes the known routes to it (frames, gc, ctypes, /proc/self/mem, signal handlers,
  tracing), but a bug in CPython or an extension module that lets Python code read arbitrary
  memory would let a program forge a pass. It would not let it harm the host: that is the
  namespaces' job, and the audit hook is not counted as a security boundary.
- Test-level reward hacks are not caught: an object whose `__eq__` always returns True passes
  `assert f(x) == y`, as in every HumanEval/MBPP harness (EvalPlus-style type checks would be
  the next step).
- Without namespaces (`isolation="rlimits"`: a kernel without unprivileged user namespaces, or a
  container that forbids them) the program sees the host file system with the rights of the
  user memrl runs as (root runs it as nobody), the network is stopped only by the audit hook
  (not a boundary: any memory-corruption bug gets around it), process creation likewise, and a
  process that escapes the audit hook and calls setsid() leaves both the process group and the
  session that the parent kills (nothing but a pid namespace or a cgroup would catch it). The
  process limit counts all processes of the user, so a fork bomb in one sandbox can make a
  concurrent one's fork fail. A warning is logged when "auto" falls back to this mode.
"""

from memrl.sandbox.pool import SandboxPool, cpu_count, detect_isolation
from memrl.sandbox.runner import STATUSES, Job, Limits, SandboxError, Verdict, run_job

__all__ = [
    "STATUSES",
    "Job",
    "Limits",
    "SandboxError",
    "SandboxPool",
    "Verdict",
    "cpu_count",
    "detect_isolation",
    "run_job",
]
