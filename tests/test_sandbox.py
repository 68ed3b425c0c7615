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


# --- a sandbox that fails before its job starts --------------------------------------


def test_a_child_that_dies_before_its_job_starts_is_replaced_once(monkeypatch):
    """A pooled child killed before it said it was confined (as a refused fork or the OOM
    killer would end it) ran nothing of the job: the job runs again in a fresh sandbox,
    and the caller sees only its result."""
    from stop.sandbox import slots

    real_take, taken = slots.take, []

    def take_one_that_dies_first(kind):
        slot = real_take(kind)
        if not taken:
            slot.proc.kill()  # the keeper; the jail's init dies with it
            slot.proc.wait(10)
        taken.append(slot)
        return slot

    monkeypatch.setattr(slots, "take", take_one_that_dies_first)
    result = run_job(
        "call",
        {"code": "def f():\n    return 7\n", "entry": "f", "inputs": [[]]},
        Limits(wall_s=10),
        use_pool=True,
    )
    slots.settle()
    assert len(taken) == 2
    assert result.status == "ok", result.error
    assert result.value["outputs"] == [7]


def test_a_start_up_that_fails_twice_says_why(monkeypatch):
    """A child that cannot start (here an import fails, as a broken installation or a
    MemoryError at start-up would fail it) is tried twice, then reported with its exit
    status and the last line of its stderr."""
    import subprocess
    import sys

    from stop.sandbox import slots

    starts = []

    def broken_start(setup, env, out, err, to_child_r, from_child_w):
        starts.append(setup["stage"])
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", "import stop_no_such_module"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        return proc, os.getpid()

    monkeypatch.setattr(slots, "_start_fresh", broken_start)
    result = run_job(
        "call", {"code": "", "entry": "f", "inputs": [[]]}, Limits(wall_s=10), use_pool=False
    )
    slots.settle()
    assert len(starts) == 2 and starts[0] != starts[1]  # a fresh sandbox each time
    assert result.status == "crash"
    assert result.error.startswith(
        "exited with status 1 before replying; stderr: ModuleNotFoundError: "
        "No module named 'stop_no_such_module'"
    ), result.error
    assert result.error.endswith("(the sandbox failed twice before its job started)")


def test_a_job_that_kills_its_child_is_never_run_again(monkeypatch):
    """Once the child has said it is confined, the job's code may have run: its crash is
    its result (its score), reported with why, and the job is not tried again."""
    from stop.sandbox import slots

    real_take, taken = slots.take, []
    monkeypatch.setattr(slots, "take", lambda kind: taken.append(kind) or real_take(kind))
    code = (
        "import os, sys\n"
        "def improve_algorithm(s, u, m):\n"
        "    print('about to leave', file=sys.stderr, flush=True)\n"
        "    os._exit(3)\n"
    )
    result = improver(code)
    assert len(taken) == 1
    assert result.status == "crash"
    assert result.error == "exited with status 3 before replying; stderr: about to leave"
