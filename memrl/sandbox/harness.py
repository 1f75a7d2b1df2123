"""The child side of the sandbox: isolate this process, run one untrusted program and its tests, report.

Never imported by memrl: `memrl.sandbox.runner` starts it as a script,
`python -s -S -B -u harness.py JOB_FD NONCE_FD REPORT_FD`, with a scrubbed environment, stdin from
/dev/null and stdout/stderr on a capped pipe. It uses the standard library only.

Process layout with namespaces (`isolation == "namespaces"`):

    harness (host side)  -- new mount/net/pid/ipc/uts namespaces, a fresh root, no privileges
      `-- init (PID 1 of the new pid namespace): waits for the runner, then exits; the kernel then
          |   kills every process left in the namespace (daemonised grandchildren included)
          `-- runner: rlimits, audit hook, program, tests, report

With `isolation == "rlimits"` (no namespaces on this kernel) the harness is the runner itself.

The verdict travels on REPORT_FD as one line `<nonce> <status> <detail>`. The nonce (128 random bits)
comes on NONCE_FD, which the runner reads and closes before any untrusted code runs; the nonce then
lives only in this function's frame and the reporter's private globals. Frames, gc introspection,
ctypes, /proc, tracing and signal handlers are refused by an audit hook (which cannot be removed), so
the program cannot read the nonce and forge a pass by the ordinary routes; see
`memrl/sandbox/__init__.py` for what this does not stop. Exiting early (`sys.exit`, `os._exit`) writes
no report, which the parent grades as an error.
"""

import os
import sys

# A test's line numbers start here, so a traceback line tells test code from the program's code
# without reading frames (which the audit hook refuses).
TEST_LINE_OFFSET = 1_000_000
# Linux clone flags (linux/sched.h)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
# mount(2) flags
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
# pivot_root has no libc wrapper; where the number is unknown we chroot instead
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
# The user the program runs as when memrl runs as root, and its id inside the sandbox's user namespace.
NOBODY = 65534
INNER_ID = 1000
DEVICES = ("null", "zero", "full", "random", "urandom")
# Audit events that hand out frames, memory, processes, sockets or tracing: refused to the program.
DENIED_EVENTS = frozenset(
    {
        "sys._getframe",
        "sys._current_frames",
        "sys._current_exceptions",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.exec",
        "os.system",
        "os.kill",
        "os.killpg",
        "subprocess.Popen",
        "_thread.start_new_thread",
        "mmap.__new__",
        "os.symlink",
        "os.link",
        "pty.spawn",
        "sys.remote_exec",
    }
)
DENIED_PREFIXES = ("ctypes.", "socket.", "_posixsubprocess.", "sys.monitoring")
# attributes that give a frame (object.__getattr__ event) or swap a function's code (object.__setattr__)
FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})
CODE_ATTRS = frozenset({"__code__", "__globals__", "__closure__", "__builtins__"})
# modules the program may not load (memory access, interpreter internals)
DENIED_MODULES = frozenset(
    {"_ctypes", "ctypes", "_testcapi", "_testinternalcapi", "_xxsubinterpreters", "_posixshmem", "_posixsubprocess"}
)


# ------------------------------------------------------------------------------------------------ isolation


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _check(ctypes, rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(ctypes, libc, source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        ctypes, libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}"
    )


def _drop_capabilities(ctypes, libc):
    """Empty every capability set (capset with version 3 and zero masks), then forbid gaining new ones."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    _check(ctypes, libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")
    _check(ctypes, libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")


def _new_root(ctypes, libc, root, visible, limits):
    """Build a fresh root in `root`: read-only binds of `visible`, a few devices, an empty writable /tmp."""
    _mount(ctypes, libc, None, "/", None, MS_REC | MS_PRIVATE)
    size = max(1, limits["file_mb"]) * 1024 * 1024
    _mount(ctypes, libc, "tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=755")
    for path in visible:
        if not os.path.lexists(path):
            continue
        inner = root + path
        parent = os.path.dirname(inner)
        os.makedirs(parent, exist_ok=True)
        if os.path.islink(path):
            os.symlink(os.readlink(path), inner)
            continue
        if os.path.isdir(path):
            os.makedirs(inner, exist_ok=True)
        else:
            os.close(os.open(inner, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(ctypes, libc, path, inner, None, MS_BIND | MS_REC)
        _mount(ctypes, libc, None, inner, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.makedirs(root + "/dev", exist_ok=True)
    for name in DEVICES:
        dev = root + "/dev/" + name
        os.close(os.open(dev, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(ctypes, libc, "/dev/" + name, dev, None, MS_BIND)
    # /proc stays an empty directory: no other process, no /proc/self/mem
    for d in ("/proc", "/tmp", "/.old"):
        os.makedirs(root + d, exist_ok=True)
    _mount(ctypes, libc, "tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},nr_inodes=1024,mode=1777")
    arch = os.uname().machine
    if arch in SYS_PIVOT_ROOT:
        _check(ctypes, libc.syscall(SYS_PIVOT_ROOT[arch], root.encode(), (root + "/.old").encode()), "pivot_root")
        os.chdir("/")
        _check(ctypes, libc.umount2(b"/.old", MNT_DETACH), "umount old root")
        os.rmdir("/.old")
    else:  # pragma: no cover - other architectures
        os.chroot(root)
    # the root itself read-only; /tmp (its own mount) stays writable
    _mount(ctypes, libc, None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4m")
    os.chdir("/tmp")


def _isolate(job):
    """Enter new namespaces and a fresh root, and drop every privilege; returns in the harness process."""
    ctypes, libc = _libc()
    is_root = os.geteuid() == 0
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.geteuid(), os.getegid()
    if not is_root:
        flags |= CLONE_NEWUSER
    _check(ctypes, libc.unshare(flags), "unshare")
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not is_root:
            _map_ids(proc, uid, gid)
        _new_root(ctypes, libc, job["workdir"], _visible(job["visible"]), job["limits"])
        if is_root:
            # root builds the mounts with its own privileges, then becomes nobody in a user namespace
            # of its own (so that the process limit counts this sandbox alone)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            # changing uid made /proc/self root's; the maps below must be ours to write
            _check(ctypes, libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(DUMPABLE)")
            _check(ctypes, libc.unshare(CLONE_NEWUSER), "unshare(user)")
            _map_ids(proc, NOBODY, NOBODY)
    finally:
        os.close(proc)
    _drop_capabilities(ctypes, libc)


def _map_ids(proc, uid, gid):
    """Map one id inside the new user namespace to ours (the only mapping an unprivileged process may write)."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{INNER_ID} {uid} 1"), ("gid_map", f"{INNER_ID} {gid} 1")):
        fd = os.open("self/" + name, os.O_WRONLY, dir_fd=proc)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _visible(extra):
    """The host paths the sandbox sees read-only: `extra` and this interpreter's library folders, minus nesting."""
    paths = []
    candidates = [os.path.abspath(p) for p in list(extra) + [p for p in sys.path if p and os.path.exists(p)]]
    for p in sorted(candidates, key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in paths):
            paths.append(p)
    return paths


def _drop_root_without_namespaces(workdir):
    """Without namespaces, root runs the program as nobody, so file permissions protect the host."""
    os.chdir(workdir)
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _wait_status(pid):
    """Wait for `pid`; its exit code, or 128 + the signal that killed it (as a shell reports it)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)


# ------------------------------------------------------------------------------------------------ runner


def _set_limits(limits):
    import resource

    cpu = max(1, int(limits["cpu_s"]))
    mem = int(limits["memory_mb"]) * 1024 * 1024
    for res, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_DATA, (mem, mem)),
        (resource.RLIMIT_NPROC, (limits["processes"], limits["processes"])),
        (resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"])),
        (resource.RLIMIT_FSIZE, (limits["file_mb"] * 1024 * 1024,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)


def _make_hook(proc_dev, stat):
    """The audit hook: refuses the events that would let the program read the nonce or leave the sandbox."""

    def hook(event, args):
        if event in DENIED_EVENTS or event.startswith(DENIED_PREFIXES):
            if event.startswith("sys.") or event.startswith("gc."):
                # stdlib callers of sys._getframe catch ValueError (typing, collections, enum)
                raise ValueError(f"sandbox: {event} is not allowed")
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "object.__getattr__" and args[1] in FRAME_ATTRS:
            raise ValueError(f"sandbox: reading {args[1]} is not allowed")
        if event == "object.__setattr__" and args[1] in CODE_ATTRS:
            raise PermissionError(f"sandbox: setting {args[1]} is not allowed")
        if event == "import" and args[0] in DENIED_MODULES:
            raise ImportError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open" and isinstance(args[0], (str, bytes)) and proc_dev is not None:
            # /proc/self/mem and friends, however the path is spelled (symlinks are followed by stat)
            try:
                dev = stat(args[0]).st_dev
            except (OSError, ValueError):
                return
            if dev == proc_dev:
                raise PermissionError("sandbox: /proc is not accessible")

    return hook


def _deny_signal_handlers_and_threads():
    """A Python signal handler receives the interrupted frame, and thread starts raise no audit event
    before Python 3.13: the program may do neither (the originals become unreachable)."""
    import _signal
    import _thread

    def refuse_signal(*args, **kwargs):
        raise PermissionError("sandbox: installing signal handlers is not allowed")

    def refuse_thread(*args, **kwargs):
        raise PermissionError("sandbox: starting threads is not allowed")

    _signal.signal = refuse_signal
    if "signal" in sys.modules:
        sys.modules["signal"].signal = refuse_signal
    for name in ("start_new_thread", "start_new", "start_joinable_thread"):
        if hasattr(_thread, name):
            setattr(_thread, name, refuse_thread)


def _text(value, limit=1000):
    """`value` if it is an exact str (a program's str subclass could run code), cut to `limit` characters."""
    if type(value) is not str:
        return "<not a string>"
    return value if len(value) <= limit else value[:limit] + "..."


def _describe(exc):
    """'TypeError: message' for an exception the program raised, without trusting its class."""
    try:
        name = _text(type.__dict__["__name__"].__get__(type(exc), type), 100)
    except BaseException:  # noqa: BLE001 - a hostile class
        name = "<exception>"
    try:
        message = _text(BaseException.__str__(exc))
    except BaseException:  # noqa: BLE001 - a hostile __str__
        message = ""
    return f"{name}: {message}" if message else name


def _innermost_line(exc, traceback_type):
    """The line number of the innermost traceback entry (tb_lineno is readable without a frame)."""
    try:
        tb = BaseException.__dict__["__traceback__"].__get__(exc)
        line = None
        while type(tb) is traceback_type:
            line = tb.tb_lineno
            tb = tb.tb_next
        return line
    except BaseException:  # noqa: BLE001
        return None


def _classify(exc, where):
    """(status, detail) for an exception raised while running the program (`where`)."""
    if isinstance(exc, MemoryError):
        return "resource_limit", f"memory limit reached {where}"
    if isinstance(exc, RecursionError):
        return "resource_limit", f"recursion limit reached {where}"
    if isinstance(exc, (SystemExit, KeyboardInterrupt, GeneratorExit)):
        return "error", f"the program stopped itself {where} ({_describe(exc)})"
    return "error", f"{_describe(exc)} {where}"


def _judge(job, program_code, steps, pristine, traceback_type):
    """Run the program, then each test step; (status, detail). Runs with private builtins (see _run)."""
    g = {"__name__": "__candidate__", "__builtins__": sys.modules["builtins"]}
    try:
        exec(program_code, g)
    except BaseException as e:  # noqa: BLE001 - the program's failure is the verdict
        return _classify(e, "while running the program")
    # The tests see the program's names, but not its overrides of builtins, and fresh builtins.
    expose = job["expose"]
    t = {}
    for k, v in list(g.items()):
        if type(k) is str and (k not in pristine or k in expose) and not k.startswith("__"):
            t[k] = v
    t["__builtins__"] = dict(pristine)
    t["__name__"] = "__test__"
    for name, code, lines in steps:
        try:
            exec(code, t)
        except BaseException as e:  # noqa: BLE001
            line = _innermost_line(e, traceback_type)
            if isinstance(e, AssertionError) and line is not None and line >= TEST_LINE_OFFSET:
                index = line - TEST_LINE_OFFSET - 1
                text = lines[index].strip() if 0 <= index < len(lines) else ""
                return "failed", f"{name}: {text}"
            return _classify(e, f"in {name}")
    return "passed", ""


def _emit(write, fd, nonce, status, detail):
    """Write the one report line: nonce, status, detail with newlines escaped."""
    data = str.encode(detail, "utf-8", "replace")[:2000].replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
    write(fd, nonce + b" " + str.encode(status) + b" " + data + b"\n")


def _compile_step(name, source, ast):
    tree = ast.parse(source, filename=name)
    ast.increment_lineno(tree, TEST_LINE_OFFSET)
    return name, compile(tree, name, "exec"), source.splitlines()


def _run(job, nonce_fd, report_fd):
    """The runner: read the nonce, limit resources, arm the audit hook, run and report; never returns."""
    import ast
    import builtins
    import types

    write, exit_now = os.write, os._exit
    nonce = os.read(nonce_fd, 64)
    os.close(nonce_fd)

    # everything that runs after the program uses these private copies: the program can rebind
    # builtins and module attributes, not a function's globals it cannot reach
    pristine = dict(builtins.__dict__)
    private = {"__builtins__": dict(pristine), "sys": sys}
    for name in ("TEST_LINE_OFFSET", "DENIED_EVENTS", "DENIED_PREFIXES", "FRAME_ATTRS", "CODE_ATTRS", "DENIED_MODULES"):
        private[name] = globals()[name]
    for name in ("_text", "_describe", "_innermost_line", "_classify", "_judge", "_emit", "_make_hook"):
        f = globals()[name]
        private[name] = types.FunctionType(f.__code__, private, name, f.__defaults__)
    judge, emit = private["_judge"], private["_emit"]

    def report(status, detail):
        emit(write, report_fd, nonce, status, detail)

    try:
        steps = [_compile_step(s["name"], s["code"], ast) for s in job["tests"]]
    except SyntaxError as e:
        report("error", f"the benchmark's test does not compile: {e}")
        exit_now(0)
    try:
        program_code = compile(job["program"], "<program>", "exec")
    except (SyntaxError, ValueError) as e:
        report("error", f"the program does not compile: {e.__class__.__name__}: {e}")
        exit_now(0)

    _set_limits(job["limits"])
    # stdin is closed: input() sees end of file
    os.close(0)
    import io

    sys.stdin = io.StringIO("")
    try:
        proc_dev = os.stat("/proc").st_dev if os.path.ismount("/proc") else None
    except OSError:
        proc_dev = None
    _deny_signal_handlers_and_threads()
    for name in ("ctypes", "_ctypes", "ctypes._endian"):
        sys.modules.pop(name, None)
    sys.addaudithook(private["_make_hook"](proc_dev, os.stat))
    traceback_type = types.TracebackType

    # from here on, only locals: the program may have rebound any global name
    status, detail = judge(job, program_code, steps, pristine, traceback_type)
    emit(write, report_fd, nonce, status, detail)
    exit_now(0)


# ------------------------------------------------------------------------------------------------ main


def main():
    """Parse the three fds, isolate, fork init and runner as the isolation requires, relay the exit status."""
    del sys.path[0]  # the harness's own folder: nothing there is for the program
    job_fd, nonce_fd, report_fd = (int(a) for a in sys.argv[1:4])
    chunks = []
    while True:
        chunk = os.read(job_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(job_fd)
    import json

    job = json.loads(b"".join(chunks))
    if job["isolation"] != "namespaces":
        _drop_root_without_namespaces(job["workdir"])
        _run(job, nonce_fd, report_fd)
    try:
        _isolate(job)
    except OSError as e:
        sys.stderr.write(f"memrl sandbox: could not isolate the program: {e}\n")
        os._exit(3)
    init = os.fork()
    if init == 0:
        # PID 1 of the new pid namespace: when it exits, the kernel kills the rest of the namespace
        ctypes, libc = _libc()
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        runner = os.fork()
        if runner == 0:
            _run(job, nonce_fd, report_fd)
        os.close(nonce_fd)
        os.close(report_fd)
        os._exit(_wait_status(runner))
    os.close(nonce_fd)
    os.close(report_fd)
    os._exit(_wait_status(init))


if __name__ == "__main__":
    main()
