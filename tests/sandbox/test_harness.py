"""The sandbox side's pieces that need no sandbox: the plain-data codec and the process-tree kill."""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import subprocess
from collections import Counter, OrderedDict, defaultdict

import pytest

from memrl.sandbox.runner import HARNESS

_spec = importlib.util.spec_from_file_location("sandbox_harness", HARNESS)
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**200),
        1.5,
        -0.0,
        float("inf"),
        1 + 2j,
        "é\ud800",
        b"\x00\xff",
        [1, (2, 3), {4, 5}, frozenset({6})],
        {"a": [1], (1, 2): None, 3: {"x": 1.0}},
        Counter("abca"),
        OrderedDict([("b", 1), ("a", 2)]),
    ],
)
def test_plain_data_round_trips_exactly(value):
    text = harness.dump_json(harness.encode(value))
    back = harness.decode(harness.load_json(text))
    assert type(back) is type(value) and back == value and repr(back) == repr(value)


def test_nan_and_dict_subclasses():
    assert math.isnan(harness.decode(harness.encode(float("nan"))))
    assert type(harness.decode(harness.encode(defaultdict(int, a=1)))) is dict


@pytest.mark.parametrize(
    "value",
    [object(), type("I", (int,), {})(3), (x for x in []), [1, [2, [object()]]], print],
)
def test_anything_else_is_not_plain_data(value):
    with pytest.raises(harness.Unencodable):
        harness.encode(value)


@pytest.mark.parametrize(
    "text",
    ['["x", 1]', '{"a": 1}', "[]", "1.5", '["s", [["l", []]]]', '["d", [[["l", []], 1]]]', '["i", "zz"]', "NaN"],
)
def test_malformed_records_are_refused(text):
    with pytest.raises(ValueError):
        harness.decode(harness.load_json(text))


def test_kill_tree_reaches_daemons_that_left_the_session():
    """A child subreaper kills processes that called setsid (its orphans), then has no descendant left."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child
        code = 3
        try:
            ctypes.CDLL(None).prctl(harness.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            subprocess.run(["/bin/sh", "-c", "setsid sleep 600 & setsid sleep 600 & exit 0"], check=True)
            before = harness._tree(os.getpid())
            harness.kill_tree(os.getpid())
            code = 0 if len(before) == 2 and harness._tree(os.getpid()) == [] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
