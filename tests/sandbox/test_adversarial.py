"""Hostile programs: each must end with a fail verdict or be contained, and leave the host unharmed.

Every test runs under each isolation this machine offers (tests/sandbox/conftest.py): namespaces,
and rlimits only (the fallback of kernels without user namespaces).
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import pytest

from memrl.sandbox import Job, SandboxPool

ADD = "def add(a, b):\n    return a + b\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"
ADD_TESTS = (("test 1", "assert add(1, 2) == 3"), ("test 2", "assert add(2, 2) == 4"))


def run(pool: SandboxPool, program: str, tests=ADD_TESTS):
    return pool.run([Job(program, tests)])[0]


def test_a_correct_program_passes(pool):
    v = run(pool, ADD + "print('hello')\n")
    assert (v.status, v.detail, v.output) == ("passed", "", "hello\n")


def test_a_wrong_program_fails_on_its_first_failing_assert(pool):
    v = run(pool, WRONG_ADD)
    assert v.status == "failed" and v.detail == "test 1: assert add(1, 2) == 3"


def test_infinite_loop_times_out(pool):
    t0 = time.monotonic()
    v = run(pool, "while True:\n    pass\n")
    assert v.status == "timeout" and "CPU time limit" in v.detail
    assert time.monotonic() - t0 < pool.limits.timeout_s + 2


def test_fork_bomb_is_refused_and_leaves_no_process(pool):
    v = run(pool, "import os\nwhile True:\n    os.fork()\n")
    assert v.status == "error" and "os.fork is not allowed" in v.detail
    v = run(pool, "import subprocess\nsubprocess.Popen(['sleep', '30'])\n" + ADD)
    assert v.status == "error" and "not allowed" in v.detail
    assert not _processes_with(b"memrl/sandbox/harness.py")


def test_memory_bomb_hits_the_memory_limit(pool):
    v = run(pool, "x = bytearray(10**10)\n" + ADD)
    assert v.status == "resource_limit" and "memory" in v.detail
    v = run(pool, "x = []\nwhile True:\n    x.append(' ' * 10**6)\n")
    assert v.status == "resource_limit"


def test_deep_recursion_is_a_resource_limit_or_a_crash(pool):
    v = run(pool, "def f(n):\n    return f(n + 1)\nf(0)\n")
    assert v.status == "resource_limit" and "recursion" in v.detail
    v = run(pool, "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1) + 1\nf(0)\n")
    assert v.status in ("resource_limit", "error", "timeout")  # a C stack overflow, or too slow to get there


def test_huge_output_is_capped(pool):
    cap = pool.limits.output_kb * 1024
    v = run(pool, "print('x' * 5_000_000)\n" + ADD)
    assert v.status == "passed"
    assert v.output.startswith("x" * 100) and cap <= len(v.output) < cap + 100 and "bytes dropped" in v.output
    v = run(pool, "while True:\n    print('y' * 10000)\n")
    assert v.status == "timeout" and len(v.output) < cap + 100


def test_files_outside_the_working_folder_are_untouchable(pool, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("precious")
    os.chmod(tmp_path, 0o777)  # even a world-writable folder next to the canary
    for attack in (
        f"open({str(canary)!r}, 'w').write('gone')\n",
        f"import os\nos.remove({str(canary)!r})\n",
        f"open({str(tmp_path / 'new.txt')!r}, 'w').write('dropped')\n",
        "import shutil\nshutil.rmtree('/usr/share')\n",
    ):
        v = run(pool, attack + ADD)
        assert v.status == "error", (attack, v)
    assert canary.read_text() == "precious" and sorted(os.listdir(tmp_path)) == ["canary.txt"]
    assert os.path.isdir("/usr/share")


def test_the_working_folder_is_writable_empty_and_removed(pool):
    before = _sandbox_dirs()
    program = "import os\nassert os.listdir('.') == []\nopen('scratch.txt', 'w').write('ok')\n" + ADD
    v = run(pool, program + "assert open('scratch.txt').read() == 'ok'\n")
    assert v.status == "passed", v
    v = run(pool, "open('big.bin', 'wb').write(b'0' * 5_000_000)\n" + ADD)  # over file_mb
    assert v.status in ("resource_limit", "error")
    assert _sandbox_dirs() <= before


def test_environment_secrets_and_home_files_are_out_of_reach(pool, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMRL_TEST_SECRET", "hunter2-canary")
    home_canary = tmp_path / "credentials"
    home_canary.write_text("aws_secret=canary-key")
    program = (
        "import os\n"
        "print(sorted(os.environ.items()))\n"
        "print(os.listdir(os.path.expanduser('~')))\n"
        f"print(open({str(home_canary)!r}).read())\n" + ADD
    )
    v = run(pool, program)
    assert v.status == "error"
    assert "hunter2" not in v.output and "canary-key" not in v.output and "MEMRL_TEST_SECRET" not in v.output


def test_no_network_even_to_a_local_server(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn.recv(100))
            conn.close()

    t = threading.Thread(target=accept)
    t.start()
    try:
        v = run(
            pool, f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')\n"
        )
        v2 = run(pool, f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n")
    finally:
        t.join()
        server.close()
    assert v.status == "error" and v2.status == "error"
    assert accepted == []


def test_early_exits_do_not_pass(pool):
    for exit_call in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n", "exit()\n"):
        v = run(pool, WRONG_ADD + exit_call)
        assert v.status == "error", (exit_call, v)


def test_monkeypatched_builtins_and_shadowed_names_do_not_reach_the_tests(pool):
    tests = (("sets", "assert set(pair()) == set([1, 2])"), ("sorted", "assert sorted(pair()) == [1, 2]"))
    for cheat in (
        "import builtins\nbuiltins.set = lambda *a: 0\nbuiltins.sorted = lambda *a: [1, 2]\n",
        "def set(*a):\n    return 0\ndef sorted(*a):\n    return [1, 2]\n",
        "__builtins__.AssertionError = Exception\nimport builtins\nbuiltins.AssertionError = ZeroDivisionError\n",
    ):
        v = run(pool, cheat + "def pair():\n    return [3, 4]\n", tests)
        assert v.status == "failed", (cheat, v)


def test_overriding_check_does_not_help(pool):
    test = "def check(candidate):\n    assert candidate(1, 2) == 3\n\ncheck(add)\n"
    v = run(pool, WRONG_ADD + "def check(candidate):\n    pass\n", (("check", test),))
    assert v.status == "failed" and "candidate(1, 2) == 3" in v.detail


def test_signal_tricks_do_not_stop_the_limits(pool):
    t0 = time.monotonic()
    v = run(pool, "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass\n")
    assert v.status == "error" and "signal handlers" in v.detail
    v = run(
        pool, "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))\nwhile True:\n    pass\n"
    )
    assert v.status in ("timeout", "resource_limit")
    v = run(pool, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + ADD)
    assert v.status == "error" and "os.kill is not allowed" in v.detail
    assert time.monotonic() - t0 < 3 * pool.limits.timeout_s


@pytest.mark.parametrize(
    "attack",
    [
        # write a fake report on every descriptor, with a guessed nonce
        "import os\nfor fd in range(3, 32):\n    try:\n        os.write(fd, b'0' * 32 + b' passed \\n')\n    except OSError:\n        pass\n",
        # look for the nonce in the harness's frames, the garbage collector, memory
        "import sys\nsys._getframe(1).f_locals\n",
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    e.__traceback__.tb_frame.f_back.f_locals\n",
        "import gc\n[o for o in gc.get_objects() if isinstance(o, bytes) and len(o) == 32]\n",
        "open('/proc/self/mem', 'rb')\n",
        "import ctypes\n",
        "import sys\nsys.settrace(lambda *a: None)\n",
        "import threading\nthreading.Thread(target=print).start()\n",
        "(lambda: None).__code__ = (lambda: 1).__code__\n",
    ],
    ids=["fake-report", "getframe", "traceback-frame", "gc", "proc-mem", "ctypes", "settrace", "thread", "code-swap"],
)
def test_forging_the_report_fails(pool, attack):
    v = run(pool, WRONG_ADD + attack)
    assert v.status == "error", v


def test_verdicts_are_deterministic(pool):
    jobs = [
        Job(ADD, ADD_TESTS),
        Job(WRONG_ADD, ADD_TESTS),
        Job("print({'a', 'b', 'c', 'd'})\n" + ADD, ADD_TESTS),
        Job("x = bytearray(10**10)\n", ()),
        Job("import sys\nsys.exit(0)\n", ADD_TESTS),
    ]
    first = [(v.status, v.detail, v.output) for v in pool.run(jobs)]
    assert [s for s, _, _ in first] == ["passed", "failed", "passed", "resource_limit", "error"]
    assert [(v.status, v.detail, v.output) for v in pool.run(jobs)] == first


def test_namespaces_show_a_fresh_read_only_root(pool):
    if pool.isolation != "namespaces":
        pytest.skip("namespaces only")
    program = (
        "import os\n"
        "assert os.getuid() != 0 and os.geteuid() != 0\n"
        "assert os.listdir('/proc') == []\n"
        "assert os.getcwd() == '/tmp'\n"
        "assert not os.path.exists('/work') and not os.path.exists('/home')\n"
        "try:\n    open('/usr/memrl-canary', 'w')\nexcept OSError as e:\n    assert e.errno in (13, 30), e\n"
        "else:\n    raise AssertionError('wrote to /usr')\n" + ADD
    )
    v = run(pool, program)
    assert v.status == "passed", v


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _sandbox_dirs() -> set[str]:
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("memrl-sandbox-")}
