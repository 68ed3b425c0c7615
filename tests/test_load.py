"""Concurrency and load: 200 candidate evaluations through the speed utility at once.

Eight threads share one speed utility (two cores in CI); a fifth of the candidates come
from the hostile corpus. Every result must carry its own label, and afterwards nothing
may be left: no child or zombie of the test process, no process of any sandbox user id
the evaluations used, no temporary directory, no file or IPC object of those users, no
leaked descriptor, and the host's memory bounded.
"""

from __future__ import annotations

import os
import random
import re
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import utilities.speed
from stop.sandbox import reaper, slots
from stop.scoring.utility import Target, UtilityOptions
from tests.helpers import FIB
from tests.hostile.corpus import CANDIDATES
from tests.jailcheck import processes_of, uid_survivors
from tests.test_hostile import ipc_objects, leftover_files

pytestmark = pytest.mark.skipif(
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
