"""The sandbox side: a trusted supervisor runs the untrusted program in a child process and decides the
verdict itself, from plain data.

Never imported by memrl: `memrl.sandbox.runner` starts it as a script,
`python -s -S -B -u harness.py JOB_FD REPORT_FD` (inside bubblewrap in the "bwrap" mode), with a
scrubbed environment, stdin from /dev/null and stdout/stderr on a capped pipe. Standard library only,
so that any interpreter (`grading.sandbox.python`) can run it.

    supervisor (trusted: runs benchmark code only)
      `-- child: closes REPORT_FD, dies with the supervisor, rlimits, (rlimits mode: user nobody when
          root, Landlock: read-only view of the interpreter's folders), seccomp filter (no sockets, no
          new processes, no signals to others, no ptrace, no namespaces); then runs the program and the
          tests with each function under test wrapped by a recorder, and writes every call the tests
          made (arguments, return value or exception) as plain data to a pipe

The supervisor waits for the child (`wait4`: exit status and resource usage from the kernel), then
replays the tests: it runs the benchmark's trusted prelude (HumanEval's prompt, MBPP's reference code)
and the test steps, with each function under test replaced by a stand-in that checks the arguments
against the record and returns the recorded value. Return values must be plain data (None, bool, int,
float, complex, str, bytes, and lists, tuples, sets, frozensets, dicts of those, with exact types;
the standard library's Counter, OrderedDict and defaultdict come back as Counter, OrderedDict and
dict); anything else fails. So nothing the child writes can become "passed" unless the recorded values
really satisfy the tests: an object whose `__eq__` always returns True is not plain data, and a
forged record is only a table of values that the trusted asserts still check. The verdict
(status, detail) goes on REPORT_FD, which the child never holds.

Limits of the replay: the tests see the functions under test only through their calls (arguments
are compared by value; objects of the program's classes only by class name); a test that reads state
the program keeps elsewhere (a global, a mutated argument other than a list, dict or set) sees the
trusted prelude's, not the program's.
"""

import os
import sys

NOBODY = 65534
RECORD_CAP = 8 << 20  # bytes of recorded calls the supervisor reads; more is a resource_limit
MAX_DEPTH = 100
SIGNAL_NAMES = {4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE", 11: "SIGSEGV", 31: "SIGSYS"}
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
PR_SET_CHILD_SUBREAPER = 36
# Landlock (linux/landlock.h): syscall numbers are the same on every architecture
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LL_EXECUTE, LL_READ_FILE, LL_READ_DIR = 1, 4, 8


# ------------------------------------------------------------------------------------------------ plain data


class Unencodable(Exception):
    """A value that is not plain data."""


def encode(value, objects=False, depth=0):
    """`value` as JSON-ready tagged data; exact builtin types only (objects=True: others by type name)."""
    t = type(value)
    if depth > MAX_DEPTH:
        raise Unencodable("nested too deeply")
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -(1 << 53) < value < (1 << 53) else ["i", format(value, "x")]
    if t is float:
        return ["f", float.__repr__(value)]
    if t is complex:
        return ["c", float.__repr__(value.real), float.__repr__(value.imag)]
    if t is bytes:
        return ["b", bytes.decode(value, "latin-1")]
    if t is list or t is tuple:
        return ["l" if t is list else "t", [encode(v, objects, depth + 1) for v in value]]
    if t is set or t is frozenset:
        items = [encode(v, objects, depth + 1) for v in value]
        return ["s" if t is set else "z", sorted(items, key=_json_key)]
    if t is dict or t in _dict_types():
        # Counter, OrderedDict, defaultdict: their items, read from the dict itself (not their methods)
        tag = {dict: "d"}.get(t) or _dict_types()[t]
        return [tag, [[encode(k, objects, depth + 1), encode(v, objects, depth + 1)] for k, v in dict.items(value)]]
    if objects:
        return ["o", _type_name(value)]
    raise Unencodable(_type_name(value))


def _dict_types():
    """The standard library's dict subclasses a program may return, and their tags."""
    import collections  # harness imports sit where used: its start-up is paid on every program run

    return {collections.Counter: "C", collections.OrderedDict: "O", collections.defaultdict: "d"}


def _json_key(item):
    return dump_json(item)


def dump_json(value):
    """JSON text of tagged data (None, bool, int, str, lists): `json` costs ~10 ms to import."""
    from _json import encode_basestring_ascii  # the C encoder alone: `json` costs ~10 ms per program run

    out = []

    def put(v):
        if v is None:
            out.append("null")
        elif v is True or v is False:
            out.append("true" if v else "false")
        elif type(v) is int:
            out.append(int.__repr__(v))
        elif type(v) is str:
            out.append(encode_basestring_ascii(v))
        elif type(v) is list:
            out.append("[")
            for i, x in enumerate(v):
                if i:
                    out.append(",")
                put(x)
            out.append("]")
        elif type(v) is dict:
            out.append("{")
            for i, (k, x) in enumerate(v.items()):
                out.append(("," if i else "") + encode_basestring_ascii(k) + ":")
                put(x)
            out.append("}")
        else:
            raise Unencodable(_type_name(v))

    put(value)
    return "".join(out)


class _ScanContext:
    """What `_json.make_scanner` reads: strict JSON, no NaN or Infinity, no hooks."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = {}

    @staticmethod
    def parse_constant(name):
        raise ValueError(f"{name} is not allowed")


def load_json(text):
    """Parse untrusted JSON text with the C scanner (ValueError when malformed)."""
    from _json import make_scanner  # the C scanner alone: `json` costs ~10 ms per program run

    try:
        value, end = make_scanner(_ScanContext())(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("trailing data")
    return value


def _type_name(value):
    name = type.__dict__["__name__"].__get__(type(value), type)
    return name if type(name) is str else "?"


def decode(data, depth=0):
    """The value of `encode`'s output; raises ValueError on anything malformed (the record is untrusted)."""
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    t = type(data)
    if data is None or t is bool or t is str or t is int:
        return data
    if t is not list or not data or type(data[0]) is not str:
        raise ValueError(f"not a tagged value: {type(data).__name__}")
    tag, rest = data[0], data[1:]
    if tag == "i" and len(rest) == 1 and type(rest[0]) is str:
        return int(rest[0], 16)
    if tag == "f" and len(rest) == 1 and type(rest[0]) is str:
        return float(rest[0])
    if tag == "c" and len(rest) == 2 and all(type(x) is str for x in rest):
        return complex(float(rest[0]), float(rest[1]))
    if tag == "b" and len(rest) == 1 and type(rest[0]) is str:
        return rest[0].encode("latin-1")
    try:
        if tag in ("l", "t", "s", "z") and len(rest) == 1 and type(rest[0]) is list:
            items = [decode(x, depth + 1) for x in rest[0]]
            return {"l": list, "t": tuple, "s": set, "z": frozenset}[tag](items)
        if tag in ("d", "C", "O") and len(rest) == 1 and type(rest[0]) is list:
            import collections  # only for a record that holds a Counter or an OrderedDict

            out = {"d": dict, "C": collections.Counter, "O": collections.OrderedDict}[tag]()
            for pair in rest[0]:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError("a malformed dict entry")
                out[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
            return out
    except TypeError as e:  # an unhashable set element or dict key
        raise ValueError(str(e)) from None
    raise ValueError(f"an unknown value tag {tag!r}")


# ------------------------------------------------------------------------------------------------ child


def _confine(job, libc, ctypes):
    """Everything between fork and the program: limits, Landlock (rlimits mode), seccomp."""
    import resource  # after fork, in the child only

    libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if os.getppid() != job["supervisor"]:
        os._exit(70)  # the supervisor is already gone
    if job["isolation"] == "rlimits" and os.geteuid() == 0:
        # root's files and processes are protected by running the program as nobody
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    lim = job["limits"]
    cpu, mem, fsize = int(lim["cpu_s"]), lim["memory_mb"] << 20, lim["file_mb"] << 20
    for res, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(NO_NEW_PRIVS)")
    if job["isolation"] == "rlimits":
        _landlock(job["visible"], libc, ctypes)
    bpf = bytes.fromhex(job["seccomp"])

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(bpf) // 8, bpf)
    if libc.prctl(PR_SET_SECCOMP, 2, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(SECCOMP)")


def _landlock(paths, libc, ctypes):
    """Landlock: the program may read and run files under `paths` only, and write nowhere (best effort:
    a kernel without Landlock leaves reads to file permissions; writes are refused by seccomp anyway)."""
    import struct  # Landlock (rlimits mode) only

    abi = libc.syscall(LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return
    fs = (1 << 13) - 1 | (abi >= 2) << 13 | (abi >= 3) << 14 | (abi >= 5) << 15
    attr = (
        struct.pack("=Q", fs)
        + (struct.pack("=Q", 3) if abi >= 4 else b"")
        + (struct.pack("=Q", 3) if abi >= 6 else b"")
    )
    ruleset = libc.syscall(LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    for path in paths:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        rights = LL_EXECUTE | LL_READ_FILE | (LL_READ_DIR if os.path.isdir(path) else 0)
        rule = struct.pack("=Qi", rights, fd)
        rc = libc.syscall(LANDLOCK_ADD_RULE, ruleset, ctypes.c_int(1), rule, ctypes.c_uint32(0))
        os.close(fd)
        if rc != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule {path}")
    if libc.syscall(LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)


def _child(job, record_w):
    """Confine this process, run the program and the tests with recorders, write the record; never returns."""
    # local names for the child (ctypes is loaded by main() before the fork; builtins always is)
    import builtins
    import ctypes

    try:
        _confine(job, ctypes.CDLL(None, use_errno=True), ctypes)
    except OSError as e:
        sys.stderr.write(f"memrl sandbox: could not confine the program: {e}\n")
        os._exit(71)
    os.write(record_w, b"+")  # confined: from here on the supervisor judges whatever happens as the program's
    write, exit_now, dumps = os.write, os._exit, dump_json
    if job["random"]:
        # the tests draw from the global random generator; the program's draws must not shift theirs
        import random  # only when the tests use random: otherwise the program's process never loads it

        rng, getstate, setstate, seed = random._inst, random.Random.getstate, random.Random.setstate, random.Random.seed
    else:
        rng, getstate, setstate, seed = None, lambda r: None, lambda r, s: None, lambda r, s: None
    pristine = dict(builtins.__dict__)
    calls = []
    end = {"stage": "program", "error": None}

    def finish():
        try:
            data = str.encode(dumps({"calls": calls, "end": end}))
        except BaseException as e:  # noqa: BLE001 - e.g. out of memory while serialising
            data = str.encode(dumps({"calls": [], "end": {"stage": "record", "error": [_type_name(e), ""]}}))
        view = memoryview(data)
        try:
            while view:
                view = view[write(record_w, view) :]
        except OSError:
            pass
        exit_now(0)

    def recorder(name, fn):
        def call(*args, **kwargs):
            before = encode(args, True), encode(kwargs, True)
            state = getstate(rng)
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - recorded, then raised on
                calls.append([name, before[0], before[1], ["raise", _type_name(e), _message(e)], None])
                raise
            finally:
                setstate(rng, state)
            after = encode(args, True)
            try:
                outcome = ["return", encode(result)]
            except Unencodable as e:
                outcome = ["unencodable", str(e)]
            calls.append([name, before[0], before[1], outcome, after if after != before[0] else None])
            return result

        return call

    g = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(job["program"], "<program>", "exec"), g)
        # the tests see the program's names (not its overrides of builtins) and fresh builtins
        t = {k: v for k, v in list(g.items()) if type(k) is str and not k.startswith("__")}
        t = {k: v for k, v in t.items() if k not in pristine or k in job["candidates"]}
        for name in job["candidates"]:
            if name in t and callable(t[name]):
                t[name] = recorder(name, t[name])
        t["__builtins__"] = dict(pristine)
        t["__name__"] = "__test__"
        seed(rng, 0)
        for step in job["tests"]:
            end["stage"] = step["name"]
            exec(compile(step["code"], step["name"], "exec"), t)
        end["stage"] = "done"
    except BaseException as e:  # noqa: BLE001 - the record ends here; the replay decides
        try:
            end["error"] = [_type_name(e), _message(e)]
        except BaseException:  # noqa: BLE001
            end["error"] = ["BaseException", ""]
    finish()


def _message(exc):
    try:
        text = str(exc)  # the program's own __str__ may run: this is the child, untrusted anyway
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return ""
    return text[:500] if type(text) is str else ""


# ------------------------------------------------------------------------------------------------ replay


class Divergence(Exception):
    """The tests asked for a call the record does not hold (or holds with other arguments)."""


class Unaccepted(Exception):
    """The program returned a value that is not plain data."""


class ProgramRaised(Exception):
    """An exception the program raised that is not a builtin one."""


def _program_exception(name, message):
    import builtins  # a local name for the replay (always loaded)

    cls = getattr(builtins, name, None) if type(name) is str else None
    exc = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls(message)
        except Exception:  # noqa: BLE001 - exceptions with other constructors
            exc = None
    if exc is None:
        exc = ProgramRaised(message)
    exc.memrl_program = (str(name)[:100], str(message)[:500])
    return exc


def _stand_in(name, record):
    def call(*args, **kwargs):
        if record["next"] >= len(record["calls"]):
            raise Divergence(f"the tests call {name} once more than the program's run did")
        index = record["next"]
        entry = record["calls"][index]
        record["next"] += 1
        if type(entry) is not list or len(entry) != 5 or entry[0] != name:
            raise Divergence(f"call {index + 1} of the tests is to {name}, the program's run made another")
        if entry[1] != encode(args, True) or entry[2] != encode(kwargs, True):
            raise Divergence(f"call {index + 1} of the tests ({name}) has other arguments than the program's run")
        outcome = entry[3]
        if entry[4] is not None:
            for arg, post in zip(args, decode(entry[4])):
                # an argument the function changed in place (list.sort(), dict updates)
                if type(arg) is list and type(post) is list:
                    arg[:] = post
                elif type(arg) in (dict, set) and type(post) is type(arg):
                    arg.clear()
                    arg.update(post)
        if outcome[0] == "return" and len(outcome) == 2:
            return decode(outcome[1])
        if outcome[0] == "raise" and len(outcome) == 3:
            raise _program_exception(outcome[1], outcome[2])
        if outcome[0] == "unencodable":
            raise Unaccepted(f"{name} returned a {str(outcome[1])[:80]}, which is not plain data")
        raise ValueError("a malformed call outcome")

    return call


def _classify(name, message, where):
    if name == "MemoryError":
        return "resource_limit", f"memory limit reached {where}"
    if name == "RecursionError":
        return "resource_limit", f"recursion limit reached {where}"
    if name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        return "error", f"the program stopped itself {where} ({name})"
    return "error", f"{name}: {message} {where}" if message else f"{name} {where}"


def _replay(job, record):
    """(status, detail): the trusted tests run against stand-ins that return the recorded values."""
    end = record.get("end")
    if type(end) is not dict or type(record.get("calls")) is not list:
        raise ValueError("a malformed record")
    error = end.get("error")
    if error is not None and (type(error) is not list or len(error) != 2):
        raise ValueError("a malformed record end")
    if end.get("stage") == "program" and error:
        return _classify(str(error[0])[:100], str(error[1])[:500], "while running the program")
    t = {"__name__": "__test__"}
    try:
        exec(compile(job["prelude"], "<prelude>", "exec"), t)
    except Exception as e:  # noqa: BLE001 - the benchmark's own code
        return "error", f"the benchmark's prelude raised {type(e).__name__}: {e}"
    state = {"calls": record["calls"], "next": 0}
    for name in job["candidates"]:
        t[name] = _stand_in(name, state)
    if job["random"]:
        import random  # only for a replay of tests that use random

        random.seed(0)
    for step in job["tests"]:
        try:
            exec(compile(step["code"], step["name"], "exec"), t)
        except Divergence as e:
            if error:
                return _classify(str(error[0])[:100], str(error[1])[:500], f"in {end.get('stage')}")
            return "error", f"{step['name']}: {e}"
        except Unaccepted as e:
            return "failed", f"{step['name']}: {e}"
        except BaseException as e:  # noqa: BLE001
            raised = getattr(e, "memrl_program", None)
            if raised:
                return _classify(*raised, f"in {step['name']}")
            if isinstance(e, AssertionError):
                return "failed", f"{step['name']}: {_failing_line(e, step)}"
            return _classify(type(e).__name__, str(e), f"in {step['name']}")
    return "passed", ""


def _failing_line(exc, step):
    """The innermost line of the test step in the traceback (`traceback` costs ~10 ms to import)."""
    tb, line = exc.__traceback__, 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == step["name"]:
            line = tb.tb_lineno
        tb = tb.tb_next
    lines = step["code"].splitlines()
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


# ------------------------------------------------------------------------------------------------ supervisor


def _signal_verdict(sig, cpu, limits):
    """(status, detail) for a child killed by `sig` after `cpu` seconds of CPU (kernel facts only)."""
    if sig == 24 or (sig == 9 and cpu >= limits["cpu_s"]):  # SIGXCPU, or SIGKILL at the hard CPU limit
        return "timeout", f"CPU time limit of {limits['cpu_s']:g} s reached"
    if sig == 25:
        return "resource_limit", "file size limit reached"
    if sig == 9:
        return "resource_limit", "killed by SIGKILL before its CPU limit (out of memory)"
    if sig in SIGNAL_NAMES:
        return "error", f"crashed with {SIGNAL_NAMES[sig]}"
    return "error", f"killed by signal {sig}"


def _tree(pid):
    """`pid`'s descendants, from /proc/PID/task/TID/children (empty where /proc is missing)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def kill_tree(me):
    """As a child subreaper, kill every descendant of `me` (orphans are reparented to us) and reap them.

    The seccomp filter already refuses the program every new process; this is the second line: a
    process-tree kill, which also reaches processes that left the process group or the session."""
    while True:
        tree = _tree(me)
        if not tree:
            return
        for pid in tree:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if _tree(me) == tree:
            # killed but not yet reaped (zombies of our own children): wait for them
            for pid in tree:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass


def _supervise(job):
    """Fork the child, read its record, decide: (status, detail)."""
    import resource  # where used: the harness's start-up is paid on every program run

    record_r, record_w = os.pipe()
    job["supervisor"] = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(record_r)
        os.close(job["report_fd"])
        _child(job, record_w)
    os.close(record_w)
    # the replay works on at most what the program may use
    mem = job["limits"]["memory_mb"] << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    chunks, size = [], 0
    while size <= RECORD_CAP:
        chunk = os.read(record_r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    os.close(record_r)
    if size > RECORD_CAP:
        os.kill(pid, 9)
    _, status, usage = os.wait4(pid, 0)
    if job["isolation"] == "rlimits":
        kill_tree(os.getpid())  # bwrap: the pid namespace ends with us
    if size > RECORD_CAP:
        return "resource_limit", f"the tests' calls returned more than {RECORD_CAP >> 20} MiB of values"
    if os.WIFSIGNALED(status):
        return _signal_verdict(os.WTERMSIG(status), usage.ru_utime + usage.ru_stime, job["limits"])
    code = os.WEXITSTATUS(status)
    data = b"".join(chunks)
    if not data.startswith(b"+"):
        # the confinement itself failed, before any of the program ran: a sandbox failure, not a
        # verdict (the runner retries); the child's stderr says why
        raise RuntimeError(f"the program's process could not be confined (exit code {code})")
    if len(data) == 1:
        return "error", f"the program ended (exit code {code}) before its tests ran"
    try:
        record = load_json(data[1:].decode("ascii"))
        if type(record) is not dict:
            raise ValueError("not an object")
        return _replay(job, record)
    except MemoryError:
        return "resource_limit", "memory limit reached while checking the returned values"
    except RecursionError:
        return "resource_limit", "recursion limit reached while checking the returned values"
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        return "error", f"the record of the program's run is malformed ({str(e)[:200]})"


def main():
    """Read the job, supervise, write the verdict (status, detail) on REPORT_FD."""
    import marshal  # where used: the harness's start-up is paid on every program run

    del sys.path[0]  # the harness's own folder: nothing there is for the program
    job_fd, report_fd = (int(a) for a in sys.argv[1:3])
    chunks = []
    while True:
        chunk = os.read(job_fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(job_fd)
    job = marshal.loads(b"".join(chunks))  # from the runner: trusted
    job["report_fd"] = report_fd
    import ctypes  # before the fork: the child inherits it loaded

    # no other process of this user may read or write this one's memory (/proc/PID/mem)
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # orphaned descendants of the program become our children, so that kill_tree reaches them all
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    os.close(0)
    status, detail = _supervise(job)
    os.write(report_fd, marshal.dumps((status, detail)))
    os._exit(0)


if __name__ == "__main__":
    main()
