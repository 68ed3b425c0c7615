"""Concurrency and load.

200 candidate evaluations through the speed utility at once: eight threads share one
speed utility (two cores in CI); a fifth of the candidates come from the hostile corpus.
Every result must carry its own label, and afterwards nothing may be left: no child or
zombie of the test process, no process of any sandbox user id the evaluations used, no
temporary directory, no file or IPC object of those users, no leaked descriptor, and the
host's memory bounded.

A busy machine: with every core kept busy by other processes, the hostile corpus and a
short `stop improve` get the same statuses as on an idle machine, measured in the same
test (a loaded machine makes a run slower; it never turns a good target into bad input
or a good candidate into a crash or a timeout). And the speed utility's limits come
from what it measured: its calibration tries again with more time before it calls a
target bad, and a candidate's limit is CPU time, which load does not inflate.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import utilities.speed
from stop.errors import BadInput
from stop.sandbox import reaper, slots
from stop.sandbox.runner import Limits, SandboxResult
from stop.scoring.utility import Target, UtilityOptions
from tests import replies
from tests.helpers import FIB, run_stop
from tests.hostile.corpus import CANDIDATES
from tests.jailcheck import processes_of, uid_survivors
from tests.test_hostile import ipc_objects, leftover_files

ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="the sandbox's guarantees (a private user id per sandbox) hold only as root",
)

TOTAL, WORKERS, TIMEOUT_S = 200, 8, 5.0
RSS_BOUND_MB = 200

HONEST = {
    "naive": FIB.read_text(),
    "iterative": (
        "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
        "    return a\n"
    ),
    "memoized": (
        "from functools import lru_cache\n\n\n@lru_cache(maxsize=None)\ndef fib(n):\n"
        "    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
    ),
}
# Hostile candidates from the corpus (none needs a placeholder), and how many of each.
HOSTILE = {
    "fork_bomb": 4,
    "memory_bomb": 3,
    "os_exit_at_import": 3,
    "kill_own_process_group": 3,
    "kill_parent": 2,
    "deep_recursion": 3,
    "segfault_via_ctypes": 3,
    "return_a_generator": 3,
    "return_nan": 3,
    "huge_stdout": 2,
    "disk_filler_one_huge_file": 2,
    "spawn_subprocess": 2,
    "infinite_loop": 2,
    "c_level_hang_blocking_pipe_read": 2,
}
SYNTAX_ERRORS = 3  # and three programs that do not parse


def _children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is `pid`, zombies included."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat", "rb") as f:
                state, ppid = f.read().rsplit(b")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(ppid) == pid:
            found.append((int(entry.name), state.decode()))
    return found


def _workload() -> list[tuple[str, str, str, str | None]]:
    """(label, program, expected status, detail regex or None), in a fixed shuffled order."""
    cases = {c.name: c for c in CANDIDATES}
    jobs = []
    for name, count in HOSTILE.items():
        case = cases[name]
        assert "@" not in case.source and case.bug is None, name
        if case.status == "timeout":
            detail = rf"^timed out after {TIMEOUT_S:g} s; killed$"
        elif "for args" in (case.detail or ""):
            detail = r"^for args \[15\]: expected 610, got "
        else:
            detail = case.detail
        jobs += [(name, case.source, case.status, detail)] * count
    jobs += [
        ("syntax_error", "def fib(n) return n\n", "syntax_error", r"^line 1: ")
    ] * SYNTAX_ERRORS
    assert len(jobs) == TOTAL // 5
    honest = list(HONEST.items())
    for i in range(TOTAL - len(jobs)):
        label, program = honest[i % len(honest)]
        jobs.append((label, program, "ok", None))
    random.Random(0).shuffle(jobs)
    return jobs


@ROOT_ONLY
def test_two_hundred_concurrent_evaluations_a_fifth_hostile(monkeypatch):
    target = Target(path=FIB, source=FIB.read_text())
    utility = utilities.speed.build(target, UtilityOptions(inputs="[[15]]", timeout_s=TIMEOUT_S))
    utility.calibrate(target)
    assert utility.expected == [610]

    uids: set[int] = set()
    dirs: list[str] = []
    next_uid, mkdtemp = reaper.next_uid, tempfile.mkdtemp

    def spy_uid(weak: bool) -> int:
        uid = next_uid(weak)
        uids.add(uid)
        return uid

    def spy_mkdtemp(*args, **kwargs):
        path = mkdtemp(*args, **kwargs)
        if os.path.basename(path).startswith(("stop-sbx-", "stop-host-")):
            dirs.append(path)
        return path

    monkeypatch.setattr(reaper, "next_uid", spy_uid)
    monkeypatch.setattr(tempfile, "mkdtemp", spy_mkdtemp)

    jobs = _workload()
    me = os.getpid()
    # From no warm pool to none: the pool's parents and spare sandboxes are the host's
    # children and hold descriptors while they live.
    slots.shutdown()
    fds_before = len(os.listdir("/proc/self/fd"))
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        evaluations = list(pool.map(lambda job: utility.evaluate(job[1]), jobs))
    elapsed = time.monotonic() - started
    rss_after_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    try:
        # Every result carries its own label.
        wrong = []
        for (label, _, status, detail), evaluation in zip(jobs, evaluations, strict=True):
            if evaluation.status != status or (
                detail is not None and not re.search(detail, evaluation.detail or "")
            ):
                wrong.append((label, status, evaluation.status, evaluation.detail))
            elif (evaluation.score > 0) != (status == "ok"):
                wrong.append((label, "score", evaluation.score))
        assert not wrong, wrong
        slots.shutdown()
        # Each evaluation runs in a sandbox of its own user id (the pool's spares, made
        # ahead of need, are sandboxes too: a private and a working directory each).
        assert len(uids) == len(dirs) // 2 >= TOTAL

        # Nothing is left behind.
        assert not _children_of(me), f"children or zombies of the host: {_children_of(me)}"
        left = uid_survivors(uids)
        assert not left, f"processes of sandbox users survived: {left}"
        assert not [d for d in dirs if os.path.exists(d)]
        assert not leftover_files(uids), leftover_files(uids)
        assert not ipc_objects(uids), ipc_objects(uids)
        assert len(os.listdir("/proc/self/fd")) == fds_before, "descriptors leaked"
        assert rss_after_mb - rss_before_mb < RSS_BOUND_MB, (rss_before_mb, rss_after_mb)
        assert elapsed < 300  # a loose bound: a hang would be far beyond it
    finally:
        for pid in processes_of(uids):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


# --- a busy machine ---------------------------------------------------------------------

# Hostile candidates whose evaluation is short (no sleeper: each would spend the worker's
# wall backstop, seconds, twice), one or more of every status the corpus has.
UNDER_LOAD = (
    "infinite_loop",
    "busy_loop_ignoring_sigterm",
    "fork_bomb",
    "thread_spawn",
    "memory_bomb",
    "deep_recursion",
    "segfault_via_ctypes",
    "os_exit_at_import",
    "kill_parent",
    "huge_stdout",
    "return_nan",
    "return_a_generator",
    "cache_answers_between_repeats",
)


class Load:
    """Processes that spin, one per core, while `on`; `off` ends them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def on(self) -> None:
        spin = [sys.executable, "-c", "while True:\n    pass"]
        self.procs = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 1)]
        for proc in self.procs:  # until each is really spinning (not a timing assertion)
            while _cpu_ticks(proc.pid) < 5 and proc.poll() is None:
                time.sleep(0.01)

    def off(self) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs = []


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        utime, stime = stat.read().rsplit(b")", 1)[1].split()[11:13]
    return int(utime) + int(stime)


@pytest.fixture
def load():
    """Busy cores on demand; whatever happens, no spinning process outlives the test."""
    busy = Load()
    try:
        yield busy
    finally:
        busy.off()


def _corpus_statuses() -> dict[str, str]:
    """Each case's status, and the honest originals', from a utility calibrated now."""
    target = Target(path=FIB, source=FIB.read_text())
    utility = utilities.speed.build(target, UtilityOptions(inputs="[[15]]"))
    utility.calibrate(target)
    cases = {case.name: case.source for case in CANDIDATES if case.name in UNDER_LOAD}
    assert sorted(cases) == sorted(UNDER_LOAD)
    cases |= {"original": HONEST["naive"], "memoized": HONEST["memoized"]}
    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = pool.map(lambda source: utility.evaluate(source).status, cases.values())
        return dict(zip(cases, statuses, strict=True))


def _improve_statuses(tmp_path, name: str) -> tuple[int, str, list[tuple[str, str]]]:
    script = tmp_path / f"{name}.json"
    script.write_text(json.dumps([replies.MEMO, replies.WRONG, replies.HANGING, replies.SYNTAX]))
    proc = run_stop(
        *("improve", "--target", str(FIB), "--inputs", "[[15]]", "--script", str(script)),
        "--json",
        *("--samples", "4", "--budget", "5", "--runs-dir", str(tmp_path / name)),
        cwd=tmp_path,
    )
    assert proc.stdout, proc.stderr  # bad input (exit 2) prints nothing here
    out = json.loads(proc.stdout)
    found = [(c["origin"], c["evaluation"]["status"]) for c in out["candidates"]]
    return proc.returncode, out["status"], found


def test_a_busy_machine_changes_no_status(load, tmp_path):
    idle = _corpus_statuses(), _improve_statuses(tmp_path, "idle")
    assert idle[0]["original"] == idle[0]["memoized"] == "ok"
    assert idle[1][:2] == (0, "completed")
    load.on()
    busy = _corpus_statuses(), _improve_statuses(tmp_path, "busy")
    load.off()
    assert busy == idle


# --- the speed utility's limits come from what it measured -------------------------------


def _scripted(monkeypatch, utility, results: list[SandboxResult]) -> list[Limits]:
    """Make `utility`'s sandbox answer `results` in turn; the limits it was asked for."""
    asked: list[Limits] = []

    def run(program: str, limits: Limits) -> SandboxResult:
        asked.append(limits)
        return results[len(asked) - 1]

    monkeypatch.setattr(utility, "_run", run)
    return asked


def _timed_out(wall_s: float) -> SandboxResult:
    return SandboxResult(status="timeout", error=f"timed out after {wall_s:g} s", wall_s=wall_s)


def _answered(times: list[float], wall_s: float = 0.5) -> SandboxResult:
    value = {"outcome": "ok", "outputs": [610] * len(times), "times": times}
    return SandboxResult(status="ok", value=value, wall_s=wall_s)


def _speed(timeout_s: float | None = None, inputs: str = "[[15]]"):
    target = Target(path=FIB, source=FIB.read_text())
    return target, utilities.speed.build(target, UtilityOptions(inputs=inputs, timeout_s=timeout_s))


def test_calibration_tries_again_with_twice_the_time_before_the_target_is_bad(monkeypatch):
    target, utility = _speed()
    asked = _scripted(monkeypatch, utility, [_timed_out(30), _timed_out(60), _answered([0.01], 70)])
    utility.calibrate(target)
    assert [limits.wall_s for limits in asked] == [30, 60, 120]
    assert utility.expected == [610]
    # The candidates' limit: CPU time per call from the original's, and a wall backstop
    # from its (here slow, loaded) evaluation.
    assert utility.limits.call_cpu_s == 1.0  # the floor: three times 0.01 s is less
    assert utility.limits.wall_s == 20 * 70


def test_calibration_that_always_runs_out_is_bad_input(monkeypatch):
    target, utility = _speed()
    _scripted(monkeypatch, utility, [_timed_out(30), _timed_out(60), _timed_out(120)])
    with pytest.raises(BadInput, match="fails on its inputs: timed out after 120 s"):
        utility.calibrate(target)


def test_a_limit_the_worker_enforced_is_not_tried_again(monkeypatch):
    """The worker's CPU limit (and its wall backstop, which does not count waiting for a
    CPU) is the same under any load: the original that runs past it is bad at once."""
    target, utility = _speed()
    stopped = SandboxResult(
        status="ok", value={"outcome": "timeout", "error": "took longer than 20 s"}, wall_s=21
    )
    asked = _scripted(monkeypatch, utility, [stopped])
    with pytest.raises(BadInput, match="took longer than 20 s"):
        utility.calibrate(target)
    assert len(asked) == 1 and asked[0].call_cpu_s == 20


def test_candidate_cpu_limit_scales_with_the_slowest_call(monkeypatch):
    target, utility = _speed(inputs="[[15], [20]]")
    _scripted(monkeypatch, utility, [_answered([0.1, 0.9], wall_s=1.0)])
    utility.calibrate(target)
    assert utility.limits.call_cpu_s == pytest.approx(2.7)
    assert utility.limits.wall_s == 30  # the floor: twenty times 1 s is less


def test_an_explicit_timeout_is_the_candidates_limit_as_given(monkeypatch):
    target, utility = _speed(timeout_s=2)
    asked = _scripted(monkeypatch, utility, [_timed_out(2), _answered([0.01], wall_s=3)])
    utility.calibrate(target)
    assert [limits.wall_s for limits in asked] == [2, 4]  # the original, on a busy machine
    assert utility.limits == Limits(wall_s=2)


def test_an_original_that_needs_more_cpu_than_the_timeout_is_bad_input(monkeypatch):
    target, utility = _speed(timeout_s=2)
    _scripted(monkeypatch, utility, [_timed_out(2), _answered([0.5], wall_s=3)])
    with pytest.raises(BadInput, match=r"needs about 2.5 s of CPU time .* more than --timeout 2 s"):
        utility.calibrate(target)
