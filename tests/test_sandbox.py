"""Tests of the sandbox: stop.sandbox.runner (host side) with child, confine and jobs.

Every test spawns a real child. Limits are small so the whole file stays fast; no test
asserts how fast anything ran, only loose upper bounds that prove a kill happened.

This file: broken programs and the in-process guard. The rest is in
test_sandbox_results.py (what comes back, and forged replies and times),
test_sandbox_limits.py (the time limit, killing, resource limits) and
test_sandbox_world.py (environment, file system, identity, network); the helpers they
share are in tests/sandbox_helpers.py.
"""

from __future__ import annotations

import os

import pytest

from stop.sandbox.runner import Limits, run_job
from tests.sandbox_helpers import call, improver, reply

# --- the guard ---------------------------------------------------------------------


def test_guard_blocks_forks_in_improvers():
    result = improver("import os\ndef improve_algorithm(s, u, m):\n    os.fork()\n", guard=True)
    value = reply(result)
    assert value["outcome"] == "crash" and "blocked by the stop sandbox: fork" in value["error"]
    assert result.findings == ["blocked: fork (os.fork)"]


def test_guard_cannot_be_torn_down_from_inside():
    code = """
    import os, sys
    guard = sys.modules["stop.sandbox.guard"]
    guard._BLOCKED.clear()
    guard._FILE_CHANGES.clear()
    guard._inside = lambda *args: True
    def f():
        os.kill(os.getpid(), 0)
        return open("/tmp/stop-guard-probe", "w").name
    """
    value = reply(call(code))
    assert value["outcome"] == "crash", value
    assert "blocked by the stop sandbox: signal a process" in value["error"]
    assert not os.path.exists("/tmp/stop-guard-probe")


# --- broken programs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    ["def f(:\n    return 1\n", "def f():\nreturn 1\n", "def f():\n    return 1\x00\n"],
    ids=["bad-signature", "bad-indent", "null-byte"],
)
def test_syntax_error(code):
    value = reply(call(code))
    assert value["outcome"] == "syntax_error", value
    assert value["error"].startswith("line ")


@pytest.mark.parametrize(
    "code", ["def g():\n    return 1\n", "f = 3\n", ""], ids=["other-name", "not-callable", "empty"]
)
def test_missing_entry_is_a_crash(code):
    value = reply(call(code))
    assert value["outcome"] == "crash"
    assert "'f'" in value["error"]


def test_exception_reports_line_number():
    code = """\
    def helper(x):
        return 1 / x

    def f(x):
        return helper(x)
    """
    value = reply(call(code, [[1], [0]]))
    assert value["outcome"] == "crash"
    assert value["error"].startswith("line 2:"), value["error"]
    assert "ZeroDivisionError" in value["error"]
    assert "outputs" not in value


def test_exception_at_module_level_reports_line_number():
    value = reply(call("x = 1\ny = undefined_name\ndef f():\n    return 1\n"))
    assert value["outcome"] == "crash"
    assert value["error"].startswith("line 2:")
    assert "NameError" in value["error"]


@pytest.mark.parametrize(
    "body, needle",
    [
        ("import sys\n    sys.exit(3)", "SystemExit"),
        ("raise SystemExit", "SystemExit"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ],
    ids=["sys.exit(3)", "SystemExit", "KeyboardInterrupt"],
)
def test_exit_inside_function_is_a_crash(body, needle):
    value = reply(call(f"def f():\n    {body}\n"))
    assert value["outcome"] == "crash"
    assert needle in value["error"]
    assert "outputs" not in value


@pytest.mark.parametrize("code", ["os._exit(0)", "os._exit(5)", "os.kill(os.getpid(), 9)"])
def test_hard_exit_is_a_crash_without_outputs(code):
    # The program runs in a forked worker: its death is reported by the sandbox parent.
    value = reply(call(f"import os\ndef f():\n    {code}\n    return 1\n"))
    assert value["outcome"] == "crash"
    assert "outputs" not in value
    # os.kill is blocked by the guard before it can fire; the exits end the worker.
    error = value["error"]
    assert "exited before returning" in error or "blocked by the stop sandbox" in error


def test_unknown_job_kind_is_a_crash():
    result = run_job("no-such-kind", {}, Limits(wall_s=2))
    assert result.status == "crash"
    assert result.value is None
    assert "KeyError" in result.stderr
