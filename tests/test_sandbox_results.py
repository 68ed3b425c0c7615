"""Tests of the sandbox's results: what a program's outputs become as plain data, replies
that are too large, and replies and times a program tries to forge.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stop.sandbox.runner import Limits
from tests.sandbox_helpers import assert_no_survivors, call, outputs, reply

# --- results and their conversion to plain data ---------------------------------------


def test_outputs_one_per_input_with_times():
    result = call("def f(a, b):\n    return a + b\n", [[1, 2], [10, 20], ["x", "y"]], repeat=3)
    value = reply(result)
    assert value["outcome"] == "ok"
    assert value["outputs"] == [3, 30, "xy"]
    assert len(value["times"]) == 3
    assert all(isinstance(t, float) and t >= 0 for t in value["times"])
    assert result.returncode in (0, None)  # None: a pooled child, not waited for once done
    assert result.error is None


def test_module_body_runs_afresh_for_every_call():
    # A module-level cache must not carry results from one call (or repeat) to the next.
    code = """
    calls = []
    def f(x):
        calls.append(x)
        return len(calls)
    """
    assert outputs(call(code, [[1], [2], [3]], repeat=2)) == [1, 1, 1]


def test_tuples_become_lists_and_plain_values_pass():
    code = """
    def f():
        return (1, (2, 3), [4, (5,)], {"k": (None, True, 1.5, "s")})
    """
    assert outputs(call(code)) == [[1, [2, 3], [4, [5]], {"k": [None, True, 1.5, "s"]}]]


def test_bool_and_int_stay_distinct():
    out = outputs(call("def f():\n    return [True, 1, 1.0]\n"))[0]
    assert [type(x) for x in out] == [bool, int, float]


def test_non_finite_floats_come_back_as_strings():
    code = """
    def f():
        return [float("nan"), float("inf"), -float("inf"), 0.5]
    """
    assert outputs(call(code)) == [["nan", "inf", "-inf", 0.5]]


@pytest.mark.parametrize(
    "expr",
    [
        "type('MyInt', (int,), {})(3)",
        "type('MyStr', (str,), {})('x')",
        "type('MyList', (list,), {})([1])",
        "object()",
        "{1, 2}",
        "{1: 'int key'}",
        "b'bytes'",
        "[1, [2, object()]]",
        "1j",
    ],
)
def test_non_plain_values_are_wrong_answers(expr):
    value = reply(call(f"def f():\n    return {expr}\n"))
    assert value["outcome"] == "wrong_answer", value
    assert "outputs" not in value
    assert value["error"]


def test_lying_subclass_is_refused():
    # An int subclass that claims to equal everything must not pass as an answer.
    code = """
    class Liar(int):
        def __eq__(self, other):
            return True
        __hash__ = int.__hash__
    def f():
        return Liar(7)
    """
    assert reply(call(code))["outcome"] == "wrong_answer"


def test_too_deeply_nested_value_is_wrong_answer():
    code = """
    def f():
        v = 0
        for _ in range(50):
            v = [v]
        return v
    """
    value = reply(call(code))
    assert value["outcome"] == "wrong_answer"
    assert "deep" in value["error"]


def test_oversized_reply_is_refused():
    result = call("def f():\n    return 'x' * (3 << 20)\n", limits=Limits(wall_s=3, message_mb=1))
    assert result.status != "ok"
    assert result.value is None
    assert_no_survivors(result)


def test_oversized_reply_is_reported_as_crash():
    result = call("def f():\n    return 'x' * (3 << 20)\n", limits=Limits(wall_s=10, message_mb=1))
    assert result.status == "crash"
    assert "oversized" in (result.error or "")


# --- forged replies and times --------------------------------------------------------

SUM_OF_SQUARES = """
def f(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
"""


def test_the_time_is_the_kernels_whatever_the_program_does_to_clocks():
    """The harness's clocks are not asked: rebinding them changes nothing."""
    forger = (
        "import sys, time\n"
        "for name in ('stop.sandbox.worker', 'stop.sandbox.jobs'):\n"
        "    if name in sys.modules:\n"
        "        sys.modules[name]._perf_counter = lambda: 0.0\n"
        "time.perf_counter = time.monotonic = time.process_time = lambda: 0.0\n"
    ) + SUM_OF_SQUARES
    honest, forged = (reply(call(c, [[1_000_000]])) for c in (SUM_OF_SQUARES, forger))
    assert honest["outcome"] == forged["outcome"] == "ok", (honest, forged)
    assert forged["outputs"] == honest["outputs"]
    # A million iterations take tens of milliseconds: the same tens either way.
    assert forged["times"][0] > 0.3 * honest["times"][0] > 0.003, (honest, forged)


def test_honest_fast_program_is_not_mistaken_for_a_forger():
    value = reply(call("def f(n):\n    return n + 1\n", [[1], [2], [3]], repeat=5))
    assert value["outcome"] == "ok", value
    assert value["outputs"] == [2, 3, 4]


def test_program_cannot_forge_reply_on_the_channel():
    code = """
    import os, sys
    def f():
        fake = {"type": "result", "body": {"outcome": "ok", "outputs": [42], "times": [0.0]}}
        os.write(int(sys.argv[2]), (repr(fake).replace("'", '"') + "\\n").encode())
        os._exit(0)
    """
    result = call(code)
    assert not (result.status == "ok" and result.value.get("outputs") == [42]), result


# --- property: plain values round-trip ----------------------------------------------


def _as_json(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_plain_values_round_trip(value):
    got = outputs(call(f"def f():\n    return {value!r}\n"))
    assert len(got) == 1
    # Compare as canonical JSON: 1, 1.0 and True are different answers.
    assert json.dumps(got[0], sort_keys=True) == json.dumps(_as_json(value), sort_keys=True)
    if isinstance(value, float):
        assert math.copysign(1.0, got[0]) == math.copysign(1.0, value)
