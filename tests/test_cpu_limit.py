"""A task's per-instance time limit is CPU time, the same under any load: a reply that
arrives past it is over it, however late the sandbox's init read the clock; a worker
that waited for a CPU is not killed by the wall-clock backstop for that wait (while a
program that sleeps still is); an input just over its limit is run again, since what
else runs inflates one reading.

The calls run in workers forked from this process (stop/sandbox/worker.py), as the
sandbox's init forks them, so the clock the init reads can be replaced here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stop.sandbox import worker

BURN = """
import os, time
def f(seconds, starve=False):
    if starve:  # wait for the CPU behind a busy process, as on a loaded machine
        os.sched_setaffinity(0, {0})
        os.nice(19)
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return "done"
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside a jail a worker makes its folder in the cwd


def _call(code: str, args: list, limit_s: float) -> dict:
    return worker.run(
        compile(code, "<candidate>", "exec"), "f", args, 1 << 20, timed=False, limit_s=limit_s
    ).reply


def test_a_reply_past_the_cpu_limit_is_a_timeout_when_the_clock_was_read_late(monkeypatch):
    # The init reads the worker's CPU clock every 10 ms while it runs, and later than that
    # when the machine is busy: here it never gets a reading in time. The kernel's count
    # read once the reply is in still says the call took 0.08 s of its 0.05.
    real_clock, real_at_rest = worker._cpu_clock, worker._cpu_clock_at_rest
    reading = {"at_rest": False}

    def at_rest(pid: int, patience_s: float = 0.5) -> float | None:
        reading["at_rest"] = True
        try:
            return real_at_rest(pid, patience_s)
        finally:
            reading["at_rest"] = False

    monkeypatch.setattr(
        worker, "_cpu_clock", lambda pid: real_clock(pid) if reading["at_rest"] else None
    )
    monkeypatch.setattr(worker, "_cpu_clock_at_rest", at_rest)
    assert _call(BURN, [0.08], limit_s=0.05) == {
        "outcome": "timeout",
        "error": "took longer than 0.05 s",
    }
    assert _call(BURN, [0.01], limit_s=0.05) == {"outcome": "ok", "output": "done"}


def test_a_worker_kept_waiting_for_a_cpu_is_not_killed_by_the_wall_backstop():
    # 0.04 s of CPU behind a busy process on the same core, at the lowest priority: seconds
    # of wall time, past the backstop (5 x 0.05 s + 1 s), all but 0.04 s of it waiting.
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {0})
        assert _call(BURN, [0.04, True], limit_s=0.05) == {"outcome": "ok", "output": "done"}
    finally:
        hog.kill()
        hog.wait()


def test_a_sleeping_worker_is_still_killed_by_the_wall_backstop():
    code = "import time\ndef f():\n    time.sleep(30)\n"
    assert _call(code, [], limit_s=0.05) == {
        "outcome": "timeout",
        "error": "took longer than 0.05 s",
    }


def _runs(monkeypatch, readings: list) -> list:
    """worker.run answering each call with the next reading: a CPU count (the reply is
    "ok") or "killed" (the worker was killed past its limit); the calls it got."""
    calls: list = []

    def run(code, entry, args, max_reply, timed=True, limit_s=None, tagged=False, seed=0):
        calls.append(limit_s)
        reading = readings[len(calls) - 1]
        if reading == "killed":
            return worker.Call({"outcome": "timeout", "error": "took longer"}, None)
        return worker.Call({"outcome": "ok", "output": len(calls)}, reading)

    monkeypatch.setattr(worker, "run", run)
    return calls


@pytest.mark.parametrize(
    ("readings", "spare", "reply", "runs"),
    [
        ([0.09], 2, {"outcome": "ok", "output": 1}, 1),
        # Over by less than the grace: run again; the least reading is the program's.
        ([0.105, 0.095], 2, {"outcome": "ok", "output": 2}, 2),
        ([0.105, 0.108, 0.104], 5, "timeout", 3),
        (["killed"], 2, "timeout", 1),  # far over: no run would pass it
        ([0.105], 0, "timeout", 1),  # the job has no runs again left
    ],
)
def test_an_input_just_over_its_limit_is_run_again(monkeypatch, readings, spare, reply, runs):
    from stop.sandbox import jobs

    calls = _runs(monkeypatch, readings)
    left = [spare]
    got = jobs._solve(None, "f", [], 0, 0.1, 1 << 20, _NoChannel(), left)
    timeout = {"outcome": "timeout", "error": "took longer than 0.1 s"}
    assert got == (timeout if reply == "timeout" else reply)
    assert len(calls) == runs and left == [spare - (runs - 1)]
    # Each run may go past the limit by the grace, so that its reading can be had.
    assert calls == [pytest.approx(0.1 * jobs.GRACE)] * runs


def test_a_solve_jobs_wall_limit_covers_every_input_near_its_limit():
    from stop.sandbox import jobs

    for inputs, per_call_s in ((1, 2.0), (50, 0.1), (100, 0.1), (20, 2.0)):
        worst = (inputs + jobs.retries(inputs)) * per_call_s * jobs.GRACE
        assert jobs.solve_wall_s(inputs, per_call_s) > worst


class _NoChannel:
    def send(self, message: dict) -> None:
        raise AssertionError(f"no finding expected: {message}")
