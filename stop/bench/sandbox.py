"""Overhead of one sandboxed evaluation, against starting Python and against a bare fork.

Every side does the same work: run `f(x) = x + 1` on one input and hand the answer back.
The sandbox side is a full `solve` job (the kind every task utility runs): a child forked
from the warm pool in its jail (user, mount, PID, network and IPC namespaces, a root
filesystem of its own, rlimits, no capabilities, scrubbed environment), a worker forked
per input, and the host's cleanup.
The sides alternate, call by call, and each reports its median, so that a busy moment of
a shared machine does not land on one side only.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from stop.bench import Figure, figure
from stop.errors import StopError
from stop.sandbox.runner import Limits, run_job

_CODE = "def f(x):\n    return x + 1\n"
_PAYLOAD = {"code": _CODE, "entry": "f", "inputs": [[41]], "per_call_s": 1.0}


def _pooled() -> None:
    _check(run_job("solve", _PAYLOAD, Limits(), use_pool=True))


def _fresh() -> None:
    _check(run_job("solve", _PAYLOAD, Limits(), use_pool=False))


def _check(result) -> None:
    value = result.value if isinstance(result.value, dict) else {}
    if result.status != "ok" or value.get("results") != [{"outcome": "ok", "output": 42}]:
        raise StopError(f"the sandbox benchmark's job failed: {result.error or value}")


def _subprocess() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _CODE + "print(f(41))"], capture_output=True, check=True
    )
    if run.stdout.strip() != b"42":
        raise StopError("the plain subprocess gave a wrong answer")


def _fork() -> None:
    namespace: dict = {}
    exec(_CODE, namespace)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, str(namespace["f"](41)).encode())
        os._exit(0)
    os.close(w)
    answer = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    if answer != b"42":
        raise StopError("the bare fork gave a wrong answer")


def bench_sandbox(calls: int = 40) -> list[Figure]:
    sides: dict[str, Callable[[], None]] = {
        "pool": _pooled,
        "fresh": _fresh,
        "subprocess": _subprocess,
        "fork": _fork,
    }
    _pooled()  # starts the warm parent: a one-time cost per host process, not per call
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(calls):
        for name, run in sides.items():
            if name == "fresh" and i % 4:
                continue  # the slowest side: a quarter of the calls is plenty
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    ms = {name: 1000 * statistics.median(found) for name, found in times.items()}
    return [
        figure("sandbox-call-vs-python-subprocess", ms["subprocess"], ms["pool"], "ms", False),
        figure("sandbox-call-vs-bare-fork", ms["fork"], ms["pool"], "ms", False),
        figure("sandbox-pool-vs-fresh-sandbox", ms["fresh"], ms["pool"], "ms", False),
    ]
