"""Hostile programs by attack class, with the verdict each must get, and the host checks after them.

Used by tests/sandbox/test_adversarial.py in this process, and run as a script as the unprivileged
user nobody (uid 65534):

    python tests/sandbox/attacks.py MODE PYTHON CANARY PORT PID    # prints [[id, status, detail, output], ...]

Each attack is the wrong `add` (a - b) plus an attempt to forge a pass, reach the host or break the
grader; the attempt runs inside try/except, so whatever it manages, the program then fails its tests
("failed") unless the attack itself is meant to end the program (then "error" or a limit). Programs
are formatted with the host's canary file, the port of a loopback listener and the pid of the test
process (whose environment holds a secret).
"""

from __future__ import annotations

import json
import os
import socket
import sys

ADD = "def add(a, b):\n    return a + b\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"
TESTS = (("test 1", "assert add(1, 2) == 3"), ("test 2", "assert add(2, 2) == 4"))
SECRET_NAME, SECRET_VALUE = "MEMRL_TEST_SECRET", "hunter2-canary-7f3a"
FAILED = ("failed", "test 1: assert add(1, 2) == 3")


def _try(code: str) -> str:
    """`code` inside try/except BaseException, printing what it got (the output is checked for secrets)."""
    body = "".join("    " + line + "\n" for line in code.strip("\n").splitlines())
    return f"try:\n{body}except BaseException as e:\n    print('attack failed:', type(e).__name__)\n"


# (id, attack class, program, expected (status, detail or None for any detail))
ATTACKS = [
    # --- frame and gc introspection: reach the harness's state and change the tests or the record
    (
        "frame-rewrite-test-globals",
        "frame and gc introspection",
        "import sys\n"
        "def add(a, b):\n"
        + "".join(
            "    " + line + "\n"
            for line in _try(
                "f = sys._getframe(1)\n"
                "f.f_globals['__builtins__']['AssertionError'] = ZeroDivisionError\n"
                "f.f_globals['add'] = lambda a, b: a + b\n"
            ).splitlines()
        )
        + "    return a - b\n",
        FAILED,
    ),
    (
        "gc-rewrite-record",
        "frame and gc introspection",
        WRONG_ADD
        + _try(
            "import gc\n"
            "for o in gc.get_objects():\n"
            "    if type(o) is dict and 'stage' in o and 'error' in o:\n"
            "        o['stage'] = 'done'\n"
            "    if type(o) is list and o == []:\n"
            "        o.extend([['add', ['t', [1, 2]], ['d', []], ['return', 3], None]] * 2)\n"
        ),
        # the forged second call has other arguments than the tests' (2, 2): the replay stops there
        ("error", "AssertionError in test 1"),
    ),
    (
        "gc-debug-and-traceback-frames",
        "frame and gc introspection",
        WRONG_ADD
        + _try(
            "import gc\n"
            "gc.set_debug(gc.DEBUG_SAVEALL)\n"
            "try:\n"
            "    1 / 0\n"
            "except ZeroDivisionError as e:\n"
            "    fr = e.__traceback__.tb_frame\n"
            "    while fr is not None:\n"
            "        if fr.f_globals is not globals():  # the harness: make its encoder claim the right sums\n"
            "            fr.f_globals['encode'] = lambda v, objects=False, depth=0: 3\n"
            "            fr.f_globals['_replay'] = lambda job, record: ('passed', '')\n"
            "        fr = fr.f_back\n"
        ),
        # the recorded arguments no longer match the tests': the replay stops at the first call
        ("error", "AssertionError in test 1"),
    ),
    # --- built-in modules loaded a second time, extension modules under another name, subinterpreters
    (
        "reimported-builtin-posix-fork",
        "re-imported built-in modules",
        WRONG_ADD
        + _try(
            "import importlib.machinery, sys\n"
            "sys.modules.pop('posix', None)\n"
            "p2 = importlib.machinery.BuiltinImporter.load_module('posix')\n"
            "if p2.fork() == 0:\n"
            "    while True:\n"
            "        pass\n"
        ),
        FAILED,
    ),
    (
        "reimported-signal-handler",
        "re-imported built-in modules",
        WRONG_ADD
        + _try(
            "import importlib.util, sys\n"
            "sys.modules.pop('_signal', None)\n"
            "import _signal as s2\n"
            "def handler(n, f):\n"
            "    while f is not None:\n"
            "        if f.f_globals is not globals():\n"
            "            f.f_globals['_replay'] = lambda job, record: ('passed', '')\n"
            "        f = f.f_back\n"
            "s2.signal(s2.SIGALRM, handler)\n"
            "s2.setitimer(s2.ITIMER_REAL, 0.001)\n"
            "x = sum(range(10**6))\n"
        ),
        FAILED,
    ),
    (
        "aliased-extension-posixsubprocess",
        "aliased extension modules",
        WRONG_ADD
        + _try(
            "import importlib.machinery, importlib.util, glob, sys\n"
            "path = [p for d in sys.path for p in glob.glob(d + '/_posixsubprocess*.so')][0]\n"
            "loader = importlib.machinery.ExtensionFileLoader('_posixsubprocess', path)\n"
            "spec = importlib.util.spec_from_file_location('not_denied', path, loader=loader)\n"
            "m = importlib.util.module_from_spec(spec)\n"
            "import subprocess\n"
            "subprocess.Popen(['/bin/sh', '-c', 'setsid sleep 60 &'])\n"
        ),
        FAILED,
    ),
    (
        "aliased-ctypes-libc-fork-setsid",
        "aliased extension modules",
        WRONG_ADD
        + _try(
            "import ctypes\n"
            "libc = ctypes.CDLL(None)\n"
            "print('fork', libc.fork(), 'setsid', libc.setsid(), 'socket', libc.socket(2, 1, 0))\n"
        ),
        FAILED,
    ),
    (
        "subinterpreter",
        "subinterpreters",
        WRONG_ADD
        + _try(
            "import _xxsubinterpreters as si\n"
            "i = si.create()\n"
            "si.run_string(i, 'import os\\nif os.fork() == 0:\\n    os.setsid()\\n    import time\\n    time.sleep(60)\\n')\n"
        ),
        FAILED,
    ),
    # --- /proc, however it is reached
    (
        "proc-dir-fd-parent-environ",
        "/proc through dir_fd",
        WRONG_ADD
        + _try(
            "import os\n"
            "d = os.open('/proc', os.O_RDONLY)\n"
            "for pid in ('self', str(os.getppid()), '{pid}'):\n"
            "    try:\n"
            "        print(open(os.open(pid + '/environ', os.O_RDONLY, dir_fd=d), 'rb').read())\n"
            "    except OSError as e:\n"
            "        print(pid, e.errno)\n"
            "m = os.open('self/mem', os.O_RDWR, dir_fd=d)\n"
        ),
        FAILED,
    ),
    (
        "proc-parent-fds",
        "/proc through dir_fd",
        WRONG_ADD
        + _try(
            "import os\n"
            "for fd in os.listdir('/proc/%d/fd' % os.getppid()):\n"
            "    os.write(os.open('/proc/%d/fd/%s' % (os.getppid(), fd), os.O_WRONLY), b'passed')\n"
        ),
        FAILED,
    ),
    # --- values that are not what they claim
    (
        "always-equal-object",
        "always-equal objects",
        "class Eq:\n    def __eq__(self, other):\n        return True\n\ndef add(a, b):\n    return Eq()\n",
        ("failed", "test 1: add returned a Eq, which is not plain data"),
    ),
    (
        "int-subclass",
        "always-equal objects",
        "class I(int):\n    def __eq__(self, other):\n        return True\n\ndef add(a, b):\n    return I(0)\n",
        ("failed", "test 1: add returned a I, which is not plain data"),
    ),
    (
        "monkeypatched-builtins",
        "always-equal objects",
        "import builtins\nbuiltins.AssertionError = ZeroDivisionError\n__builtins__.AssertionError = Exception\n"
        + WRONG_ADD,
        FAILED,
    ),
    # --- imitating the harness's own exits and messages
    (
        "imitated-setup-failure-71",
        "imitated harness exits",
        WRONG_ADD
        + "import os, sys\nsys.stderr.write('memrl sandbox: could not confine the program: x\\n')\nos._exit(71)\n",
        ("error", "the program ended (exit code 71) before its tests ran"),
    ),
    (
        "imitated-setup-failure-3",
        "imitated harness exits",
        WRONG_ADD + "import os\nprint('memrl sandbox: could not isolate the program')\nos._exit(3)\n",
        ("error", "the program ended (exit code 3) before its tests ran"),
    ),
    (
        "early-exit-zero",
        "imitated harness exits",
        WRONG_ADD + "import sys\nsys.exit(0)\n",
        ("error", "the program stopped itself while running the program (SystemExit)"),
    ),
    # --- the disk
    (
        "disk-fill-outside-workdir",
        "disk filling outside the work folder",
        WRONG_ADD
        + "".join(
            _try(f"open({path!r}, 'wb').write(b'0' * 3_000_000)")
            for path in ("/tmp/memrl-attack-fill", "/dev/shm/memrl-attack-fill", "{canary_dir}/dropped", "fill")
        )
        + _try("import os\nos.mkdir('/tmp/memrl-attack-dir')"),
        FAILED,
    ),
    (
        "disk-fill-many-files",
        "disk filling outside the work folder",
        WRONG_ADD + _try("for i in range(10_000):\n    open(f'/tmp/f{{i}}', 'wb').write(b'0' * 100_000)"),
        FAILED,
    ),
    (
        "canary-overwrite",
        "disk filling outside the work folder",
        WRONG_ADD
        + _try("print(open({canary!r}).read())")
        + _try("open({canary!r}, 'w').write('gone')")
        + _try("import os\nos.remove({canary!r})"),
        FAILED,
    ),
    # --- processes that outlive the program
    (
        "setsid-daemon",
        "setsid daemons",
        WRONG_ADD
        + _try(
            "import os\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        import time\n"
            "        time.sleep(60)\n"
        )
        + _try("import os\nos.setsid()")
        + _try("import threading\nthreading.Thread(target=lambda: None).start()"),
        FAILED,
    ),
    (
        "kill-supervisor",
        "setsid daemons",
        WRONG_ADD + _try("import os\nos.kill(os.getppid(), 9)") + _try("import os\nos.kill(-1, 9)"),
        FAILED,
    ),
    # --- descriptors and the report channel
    (
        "descriptor-scan-fake-reports",
        "descriptor scans",
        WRONG_ADD
        + _try(
            "import os, marshal\n"
            "for fd in range(0, 1024):\n"
            '    for fake in (marshal.dumps((\'passed\', \'\')), b\'{{"status": "passed", "detail": ""}}\\n\'):\n'
            "        try:\n"
            "            os.write(fd, fake)\n"
            "        except OSError:\n"
            "            pass\n"
        ),
        ("error", None),
    ),
    (
        "report-channel-forged-record",
        "the report channel",
        WRONG_ADD
        + _try(
            "import os, json\n"
            "fake = json.dumps({{'calls': [['add', ['t', [1, 2]], ['d', []], ['return', 3], None],"
            " ['add', ['t', [2, 2]], ['d', []], ['return', 5], None]], 'end': {{'stage': 'done', 'error': None}}}})\n"
            "for fd in range(3, 64):\n"
            "    try:\n"
            "        os.write(fd, fake.encode())\n"
            "        os.close(fd)\n"
            "    except OSError:\n"
            "        pass\n"
            "os._exit(0)\n"
        ),
        # a forged record is only values: the wrong one fails its test
        ("failed", "test 2: assert add(2, 2) == 4"),
    ),
    # --- the network and secrets
    (
        "network-loopback",
        "network",
        WRONG_ADD
        + _try("import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')")
        + _try("import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))"),
        FAILED,
    ),
    (
        "environment-and-home",
        "network",
        WRONG_ADD + _try("import os\nprint(sorted(os.environ.items()))\nprint(os.listdir(os.path.expanduser('~')))"),
        FAILED,
    ),
    # --- limits
    ("cpu-loop", "limits", "while True:\n    pass\n", ("timeout", "CPU time limit of 1 s reached")),
    (
        "cpu-loop-ignoring-sigxcpu",
        "limits",
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n",
        ("timeout", "CPU time limit of 1 s reached"),
    ),
    (
        "memory-bomb",
        "limits",
        "x = bytearray(10**10)\n" + ADD,
        ("resource_limit", "memory limit reached while running the program"),
    ),
    (
        "memory-growth",
        "limits",
        "x = []\nwhile True:\n    x.append(bytearray(32 << 20))\n",
        ("resource_limit", "memory limit reached while running the program"),
    ),
    (
        "recursion",
        "limits",
        "def f(n):\n    return f(n + 1)\nf(0)\n",
        ("resource_limit", "recursion limit reached while running the program"),
    ),
    (
        "huge-return-value",
        "limits",
        "def add(a, b):\n    return 'x' * 50_000_000\n",
        ("resource_limit", None),
    ),
]


def jobs(canary: str, port: int, pid: int):
    """The attack jobs, formatted for this host."""
    from memrl.sandbox import Job

    ctx = {"canary": canary, "canary_dir": os.path.dirname(canary), "port": port, "pid": pid}
    return [Job(program.format(**ctx), TESTS, ("add",)) for _, _, program, _ in ATTACKS]


def listener() -> socket.socket:
    """A loopback listener the attacks try to reach (connections complete in the kernel's backlog)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.setblocking(False)
    return server


def connections(server: socket.socket) -> int:
    """How many connections reached `server`."""
    n = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return n
        n += 1
        conn.close()


def main() -> int:
    mode, python, canary, port, pid = sys.argv[1:6]
    from memrl.sandbox import Limits, SandboxPool

    limits = Limits(timeout_s=60.0, cpu_s=1, memory_mb=256, open_files=32, file_mb=1, output_kb=8)
    pool = SandboxPool(limits, workers=2, isolation=mode, python=python or None)
    verdicts = pool.run(jobs(canary, int(port), int(pid)))
    print(json.dumps([[a[0], v.status, v.detail, v.output] for a, v in zip(ATTACKS, verdicts)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
