"""Run one untrusted program and its tests in a fresh, isolated process; return the harness's verdict.

The parent side of the sandbox (`harness.py` is the child side). Per program it creates an empty
working folder, three pipes (job, nonce, report) and a new session, enforces the wall-clock limit by
killing the whole process group, caps the captured output, and trusts only a report line that
carries the nonce it generated for this run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
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

HARNESS = Path(__file__).with_name("harness.py")
STATUSES = ("passed", "failed", "error", "timeout", "resource_limit")
ISOLATIONS = ("namespaces", "rlimits")
# The host folders the program can read (read-only) when namespaces are used, besides the
# interpreter's own library folders; nothing else of the host file system is visible.
VISIBLE = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc/ld.so.cache")
NOBODY = 65534
# The environment of the sandbox: nothing inherited (no tokens, no keys); a fixed hash seed keeps
# set and dict orders, and so results, the same from run to run.
ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}
# Exit statuses the harness relays (128 + signal) and what they mean when no report came.
SIGNAL_VERDICTS = {
    signal.SIGXCPU: ("timeout", "CPU time limit reached"),
    signal.SIGXFSZ: ("resource_limit", "file size limit reached"),
    signal.SIGKILL: ("resource_limit", "killed (CPU hard limit or out of memory)"),
    signal.SIGSEGV: ("error", "crashed with SIGSEGV (e.g. C stack overflow from deep recursion)"),
}
# exit code of the harness when it could not build the isolation
SETUP_FAILED = 3


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): it could not start or isolate a process."""


@dataclass(frozen=True)
class Limits:
    """What one program may use.

    Attributes:
        timeout_s: wall-clock seconds from start to verdict; the parent kills the process group after.
        cpu_s: CPU seconds (RLIMIT_CPU; SIGXCPU, then SIGKILL one second later).
        memory_mb: address space (RLIMIT_AS and RLIMIT_DATA).
        processes: processes and threads (RLIMIT_NPROC; per sandbox with namespaces).
        open_files: open file descriptors (RLIMIT_NOFILE).
        file_mb: size of any file written (RLIMIT_FSIZE) and of the sandbox's /tmp.
        output_kb: stdout + stderr kept; the rest is read and dropped.
    """

    timeout_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    processes: int = 8
    open_files: int = 64
    file_mb: int = 16
    output_kb: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UserError(f"grading.sandbox.{name} must be a positive number, got {value!r}")
        if self.processes < 4:
            raise UserError(f"grading.sandbox.processes must be >= 4 (the harness needs 3), got {self.processes}")
        if self.open_files < 16:
            raise UserError(f"grading.sandbox.open_files must be >= 16 (imports need some), got {self.open_files}")
        if self.memory_mb < 64:
            raise UserError(f"grading.sandbox.memory_mb must be >= 64 (Python needs ~30 MB), got {self.memory_mb}")


@dataclass(frozen=True)
class Job:
    """One program and the tests that judge it.

    Attributes:
        program: the untrusted source (with whatever benchmark prelude belongs before it).
        tests: (name, source) steps run in order after the program, in a copy of its namespace with
            fresh builtins; the first that raises decides the verdict.
        expose: program names the tests see even where they shadow a builtin (the functions under
            test); other shadowing names are hidden, so that a program cannot redefine `set` or
            `sorted` under the tests' asserts.
    """

    program: str
    tests: tuple[tuple[str, str], ...]
    expose: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What happened to one program.

    Attributes:
        status: "passed", "failed" (a test assert failed), "error" (the program raised, exited early,
            crashed or did not compile), "timeout" (wall or CPU limit), "resource_limit" (memory,
            recursion, file size).
        detail: the first failing assert, the exception, or why there was no report.
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


def run_job(job: Job, limits: Limits, isolation: str, python: str | None = None) -> Verdict:
    """Run `job` in a fresh sandboxed process group and return its verdict.

    Args:
        job: the program and its tests.
        limits: resource limits.
        isolation: "namespaces" (fresh root, no network, pid namespace) or "rlimits" (limits only).
        python: the interpreter that runs the harness (default: this one).

    Raises:
        SandboxError: the process could not start or could not be isolated.
    """
    if isolation not in ISOLATIONS:
        raise UserError(f"unknown sandbox isolation {isolation!r}: expected one of {', '.join(ISOLATIONS)}")
    t0 = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="memrl-sandbox-")
    pipes: list[int] = []
    proc = None
    try:
        if isolation == "rlimits" and os.geteuid() == 0:
            os.chown(workdir, NOBODY, NOBODY)
        job_r, job_w = _pipe(pipes)
        nonce_r, nonce_w = _pipe(pipes)
        report_r, report_w = _pipe(pipes)
        nonce = secrets.token_hex(16).encode()
        payload = {
            "program": job.program,
            "tests": [{"name": n, "code": c} for n, c in job.tests],
            "expose": list(job.expose),
            "limits": {
                "cpu_s": limits.cpu_s,
                "memory_mb": limits.memory_mb,
                "processes": limits.processes,
                "open_files": limits.open_files,
                "file_mb": limits.file_mb,
            },
            "isolation": isolation,
            "workdir": workdir,
            "visible": list(VISIBLE),
        }
        try:
            proc = subprocess.Popen(
                [
                    python or sys.executable,
                    "-s",
                    "-S",
                    "-B",
                    "-u",
                    str(HARNESS),
                    str(job_r),
                    str(nonce_r),
                    str(report_w),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(job_r, nonce_r, report_w),
                env={**ENV, "HOME": "/tmp" if isolation == "namespaces" else workdir, "TMPDIR": "/tmp"},
                cwd="/",
                start_new_session=True,
            )
        except OSError as e:
            raise SandboxError(f"could not start the sandbox interpreter: {e}") from e
        for fd in (job_r, nonce_r, report_w):
            _close(pipes, fd)
        _send(pipes, nonce_w, nonce)
        _send(pipes, job_w, json.dumps(payload).encode())
        report, output, dropped, timed_out = _collect(proc, report_r, t0 + limits.timeout_s, limits.output_kb * 1024)
        # the harness relays its children's ends as 128 + signal; its own death by a signal is negative
        code = proc.returncode if proc.returncode is None or proc.returncode >= 0 else 128 - proc.returncode
    finally:
        if proc is not None:
            _kill_group(proc, isolation)
        for fd in list(pipes):
            _close(pipes, fd)
        if isolation == "namespaces":
            with contextlib.suppress(OSError):
                os.rmdir(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    text = output.decode("utf-8", "replace") + (f"\n[... {dropped} more bytes dropped]" if dropped else "")
    status, detail = _verdict(report, nonce, code, timed_out, limits, text)
    return Verdict(status, detail, text, round(time.monotonic() - t0, 4))


def _pipe(pipes: list[int]) -> tuple[int, int]:
    r, w = os.pipe()
    pipes += [r, w]
    return r, w


def _close(pipes: list[int], fd: int) -> None:
    if fd in pipes:
        pipes.remove(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def _send(pipes: list[int], fd: int, data: bytes) -> None:
    """Write all of `data` and close; a harness that died early (EPIPE) is judged by its exit status."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        pass
    _close(pipes, fd)


def _collect(proc: subprocess.Popen, report_fd: int, deadline: float, cap: int) -> tuple[bytes, bytes, int, bool]:
    """Read the report and the output until the harness exits or the deadline passes (then kill)."""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None
    out_fd = proc.stdout.fileno()
    sel.register(out_fd, selectors.EVENT_READ, "out")
    sel.register(report_fd, selectors.EVENT_READ, "report")
    report, output, dropped, timed_out = b"", bytearray(), 0, False
    open_fds = 2
    try:
        while open_fds and not timed_out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if proc.poll() is not None:
                # the harness is gone: read what is buffered, without waiting on leftovers holding a pipe
                remaining = min(remaining, 0.05)
            events = sel.select(timeout=remaining)
            if not events and proc.returncode is not None:
                break
            for key, _ in events:
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    open_fds -= 1
                elif key.data == "report":
                    report += chunk[: 4096 - len(report)]
                else:
                    keep = chunk[: max(0, cap - len(output))]
                    output += keep
                    dropped += len(chunk) - len(keep)
        if timed_out:
            _killpg(proc.pid)
        try:
            proc.wait(timeout=max(0.5, deadline - time.monotonic()) if not timed_out else 5)
        except subprocess.TimeoutExpired:
            timed_out = True
            _killpg(proc.pid)
            proc.wait(timeout=5)
    finally:
        sel.close()
        proc.stdout.close()
    return bytes(report), bytes(output), dropped, timed_out


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen, isolation: str) -> None:
    """Kill whatever is left of the run: its process group, and (without a pid namespace) its session."""
    _killpg(proc.pid)
    if isolation == "rlimits":
        # a process that left the group (setpgid) still has the session; one that called setsid has
        # neither, and only a pid namespace catches it
        for pid in _session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _session_members(sid: int) -> list[int]:
    """Pids whose session id is `sid` (from /proc/<pid>/stat; empty where /proc is missing)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        # fields after the ")" that closes the command name: state ppid pgrp session ...
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) == sid:
            found.append(int(entry))
    return found


def _verdict(
    report: bytes, nonce: bytes, code: int | None, timed_out: bool, limits: Limits, output: str
) -> tuple[str, str]:
    """(status, detail) from the report line if it is genuine, else from how the process ended."""
    if report:
        lines = report.split(b"\n")
        first = lines[0]
        if len(lines) == 2 and lines[1] == b"" and first.startswith(nonce + b" "):
            status, _, detail = first[len(nonce) + 1 :].partition(b" ")
            if status.decode("ascii", "replace") in STATUSES:
                text = detail.decode("utf-8", "replace").replace("\\n", "\n").replace("\\\\", "\\")
                return status.decode(), text
        if not timed_out:
            return "error", "the report channel was tampered with (a line without this run's nonce)"
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.timeout_s:g} s reached"
    if code == SETUP_FAILED and "memrl sandbox:" in output:
        raise SandboxError(output.strip().splitlines()[-1])
    if code is not None and code > 128 and (code - 128) in SIGNAL_VERDICTS:
        status, why = SIGNAL_VERDICTS[signal.Signals(code - 128)]
        if status == "timeout":
            why += f" ({limits.cpu_s} s)"
        return status, why
    if code is not None and code > 128:
        return "error", f"killed by signal {code - 128}"
    return "error", f"the program ended (exit code {code}) before the tests reported"
