"""End-to-end `stop improve` runs, timed as a user runs them (the CLI in a subprocess).

- cache: the first run of a command (the embedded model writes every reply, every
  candidate is evaluated) against the same command again, replayed: the replies from the
  response cache, the evaluations from the evaluation cache (a deterministic utility, the
  knapsack example's). What is left is the process's start and the improver's sandbox.
- improve: a replayed speed run (timings are never cached: every candidate is measured
  again) with the warm sandbox pool, against the same replayed run with a fresh
  interpreter per sandbox (STOP_SANDBOX_POOL=0): what the sandbox costs.
"""

from __future__ import annotations

import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stop.bench import Figure, figure
from stop.errors import StopError

_ROOT = Path(__file__).resolve().parents[2]
# Each small enough that the first run takes well under a minute on 2 cores: the speed
# run is the smallest real one; the knapsack run is one batch of 8 samples at the
# embedded model's default length, as a first run is.
_ARGS = {
    "speed": [
        "--target", str(_ROOT / "examples" / "fib.py"), "--utility", "speed",
        "--samples", "2", "--max-tokens", "64", "--budget", "3", "--llm-budget", "2",
    ],
    "knapsack": [
        "--target", str(_ROOT / "examples" / "knapsack.py"),
        "--utility", str(_ROOT / "examples" / "knapsack_utility.py"),
        "--samples", "8", "--budget", "9", "--llm-budget", "8",
    ],
}  # fmt: skip


def _stop(runs_dir: Path, pool: bool, task: str = "speed") -> float:
    env = {**os.environ, "STOP_SANDBOX_POOL": "1" if pool else "0"}
    args = [*_ARGS[task], "--backend", "local"]
    command = [
        sys.executable,
        "-m",
        "stop.cli",
        "improve",
        *args,
        "--runs-dir",
        str(runs_dir),
        "--json",
    ]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=_ROOT)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:]
        raise StopError(f"stop improve failed in the benchmark: {' '.join(tail)}")
    return elapsed


@functools.cache
def _timings(replays: int = 2) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="stop-bench-") as tmp:
        runs_dir = Path(tmp)
        first = _stop(runs_dir, pool=True, task="knapsack")
        replayed = [_stop(runs_dir, pool=True, task="knapsack") for _ in range(replays)]
        _stop(runs_dir, pool=True)  # fills the response cache of the speed run
        pooled, fresh = [], []
        for _ in range(replays):  # alternate, so that load spikes fall on both sides
            pooled.append(_stop(runs_dir, pool=True))
            fresh.append(_stop(runs_dir, pool=False))
    return {
        "first": first,
        "replayed": statistics.median(replayed),
        "replay": statistics.median(pooled),
        "replay_fresh": statistics.median(fresh),
    }


def bench_cache() -> list[Figure]:
    t = _timings()
    return [figure("improve-replay-from-cache", t["first"], t["replayed"], "s", False)]


def bench_improve() -> list[Figure]:
    t = _timings()
    return [figure("improve-end-to-end-pool", t["replay_fresh"], t["replay"], "s", False)]
