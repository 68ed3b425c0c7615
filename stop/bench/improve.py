"""End-to-end `stop improve` runs, timed as a user runs them (the CLI in a subprocess).

- cache: the first run of a command (the embedded model writes every reply) against the
  same command again, replayed from the response cache.
- improve: the replayed run with the warm sandbox pool against the same replayed run
  with a fresh interpreter per sandbox (STOP_SANDBOX_POOL=0). Both replay the cache, so
  the difference is what the sandbox costs.
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
# Small enough that the first run takes well under a minute on 2 cores.
_ARGS = [
    "improve",
    "--target",
    str(_ROOT / "examples" / "fib.py"),
    "--utility",
    "speed",
    "--backend",
    "local",
    "--samples",
    "2",
    "--budget",
    "3",
    "--max-tokens",
    "64",
    "--llm-budget",
    "2",
]


def _stop(runs_dir: Path, pool: bool) -> float:
    env = {**os.environ, "STOP_SANDBOX_POOL": "1" if pool else "0"}
    command = [sys.executable, "-m", "stop.cli", *_ARGS, "--runs-dir", str(runs_dir), "--json"]
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
        first = _stop(runs_dir, pool=True)
        pooled, fresh = [], []
        for _ in range(replays):  # alternate, so that load spikes fall on both sides
            pooled.append(_stop(runs_dir, pool=True))
            fresh.append(_stop(runs_dir, pool=False))
    return {
        "first": first,
        "replay": statistics.median(pooled),
        "replay_fresh": statistics.median(fresh),
    }


def bench_cache() -> list[Figure]:
    t = _timings()
    return [figure("improve-replay-from-cache", t["first"], t["replay"], "s", False)]


def bench_improve() -> list[Figure]:
    t = _timings()
    return [figure("improve-end-to-end-pool", t["replay_fresh"], t["replay"], "s", False)]
