"""Tests of the sandbox's limits: the time limit and killing what outlives it, and the
resource limits (memory, processes, output, file size).
"""

from __future__ import annotations

import signal

import pytest

from stop.sandbox.runner import Limits
from tests.sandbox_helpers import assert_no_survivors, call, improver, outputs, reply

# --- time limit and killing ---------------------------------------------------------


def test_infinite_loop_times_out_and_is_killed():
    code = """
    def f():
        while True:
            pass
    """
    result = call(code, limits=Limits(wall_s=1))
    assert result.status == "timeout"
    assert result.value is None
    assert "timed out" in result.error
    assert result.returncode == -signal.SIGKILL
    assert result.wall_s < 20
    assert_no_survivors(result)


def test_loop_ignoring_sigterm_is_killed():
    code = """
    import signal
    def f():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("ignoring", flush=True)
        while True:
            pass
    """
    result = call(code, limits=Limits(wall_s=1), preload=("signal",))
    assert "ignoring" in result.stdout  # the handlers really were installed
    assert result.status == "timeout"
    assert result.wall_s < 20
    assert_no_survivors(result)


def test_sleeping_child_times_out():
    result = call("import time\ndef f():\n    time.sleep(60)\n", limits=Limits(wall_s=1))
    assert result.status == "timeout"
    assert result.wall_s < 20


@pytest.mark.parametrize(
    "body",
    ["while True:\n        pass", "import time\n    time.sleep(60)"],
    ids=["spins", "sleeps"],
)
def test_call_cpu_limit_stops_a_call_before_the_wall_limit(body):
    """Limits.call_cpu_s holds each call to CPU time, which a busy machine does not
    inflate; a call that sleeps instead meets the worker's wall backstop, which does not
    count waiting for a CPU. Either way the job answers, long before the host's limit."""
    result = call(f"def f():\n    {body}\n", limits=Limits(wall_s=120, call_cpu_s=0.2))
    value = reply(result)
    assert value == {"outcome": "timeout", "error": "took longer than 0.2 s"}
    assert_no_survivors(result)


def test_timed_call_cannot_start_processes_or_threads():
    code = """
    import os, _thread
    def f(kind):
        if kind == "fork":
            os.fork()
        else:
            _thread.start_new_thread(print, ())
        return "started"
    """
    for kind in ("fork", "thread"):
        value = reply(call(code, [[kind]]))
        assert value["outcome"] == "crash", value
        error = value["error"]
        # A fork is stopped by the guard first; a thread by the process limit.
        assert (
            "Resource temporarily unavailable" in error
            or "can't start" in error
            or "blocked by the stop sandbox: fork" in error
        )


@pytest.mark.parametrize("then", ["return str(pid)", "time.sleep(60)"], ids=["returns", "hangs"])
def test_setsid_grandchild_is_killed(then):
    code = f"""
    import os, time
    def improve_algorithm(initial_solution, utility, language_model):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.setsid()
                while True:
                    time.sleep(1)
            while True:
                time.sleep(1)
        print(pid, flush=True)
        {then}
    """
    result = improver(code, limits=Limits(wall_s=1.5))
    if then == "return str(pid)":
        assert reply(result)["program"] == result.stdout.split()[0]
    else:
        assert result.status == "timeout"
    assert_no_survivors(result)


def test_fork_limit_and_forked_children_killed():
    code = """
    import os, time
    def improve_algorithm(initial_solution, utility, language_model):
        for _ in range(200):
            if os.fork() == 0:
                while True:
                    time.sleep(1)
        return "all forked"
    """
    result = improver(code, limits=Limits(wall_s=2, processes=8))
    value = reply(result)
    assert value["outcome"] == "crash", value
    assert "BlockingIOError" in value["error"] or "Resource temporarily" in value["error"]
    assert_no_survivors(result)


def test_threads_of_a_zombie_leader_are_killed():
    code = """
    import ctypes, os, time, _thread
    def spin():
        while True:
            time.sleep(0.05)
    def improve_algorithm(initial_solution, utility, language_model):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            _thread.start_new_thread(spin, ())
            time.sleep(0.1)
            ctypes.CDLL(None).pthread_exit(None)
        time.sleep(0.4)
        return str(pid)
    """
    result = improver(code, limits=Limits(wall_s=2))
    assert reply(result)["outcome"] == "ok"
    assert_no_survivors(result)


# --- resource limits ----------------------------------------------------------------


def test_memory_bomb_is_contained():
    result = call("def f():\n    return len(bytearray(4 << 30))\n", limits=Limits(wall_s=3))
    if result.status == "ok":
        value = result.value
        assert value["outcome"] == "crash", value
        assert "MemoryError" in value["error"]
    else:
        assert result.status == "crash"
    # The host is fine and the next sandbox works.
    assert len(bytearray(1 << 20)) == 1 << 20
    assert outputs(call("def f():\n    return 1\n")) == [1]


def test_rlimits_are_applied():
    code = """
    import resource
    def f():
        return [resource.getrlimit(r)[0] for r in (
            resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE,
            resource.RLIMIT_CORE)]
    """
    limits = Limits(wall_s=3, memory_mb=900, file_mb=3, open_files=40)
    assert outputs(call(code, limits=limits)) == [[900 << 20, 3 << 20, 40, 0]]


def test_small_stdout_and_stderr_are_kept():
    code = """
    import sys
    def f():
        print("hello out")
        print("hello err", file=sys.stderr)
        return 1
    """
    result = call(code)
    assert outputs(result) == [1]
    assert "hello out" in result.stdout
    assert "hello err" in result.stderr


def test_huge_stdout_is_cut_off_and_tail_is_bounded():
    limits = Limits(wall_s=3, tail_chars=1000)
    result = call("def f():\n    print('x' * (100 << 20))\n    return 1\n", limits=limits)
    assert not (result.status == "ok" and result.value.get("outcome") == "ok"), result.value
    assert 0 < len(result.stdout) <= limits.tail_chars
    assert len(result.stderr) <= limits.tail_chars
    assert outputs(call("def f():\n    return 2\n")) == [2]


def test_file_size_limit_applies_to_files():
    code = """
    def f():
        with open("big", "wb") as fh:
            fh.write(b"x" * (4 << 20))
        return 1
    """
    value = reply(call(code, limits=Limits(wall_s=3, file_mb=1)))
    assert value["outcome"] == "crash"
    assert "File too large" in value["error"] or "Errno 27" in value["error"]
