"""`stop bench pipeline`: how well `stop improve` keeps a server's requests in flight.

One MAP-Elites run (8 samples a call, 64 completions, nothing cached) against a loopback
OpenAI-compatible server (stop/bench/latency_server.py) whose requests take 0.5 s, every
eighth 2.5 s. With 8 requests in flight at every moment the run could take no less than
the ideal, sum(latencies served) / 8 = (56 x 0.5 + 8 x 2.5) / 8 = 6 s; the figures put the
measured wall time against that ideal, both taken in the same run from what the server
actually served. A run that waits for a whole batch before sending the next waits for
the slow request of every batch: 8 x 2.5 s = 20 s, about 3.3x the ideal.

- pipeline-wall-vs-ideal-8-in-flight: the whole improve run, from building the backend
  (the server check) to closing the executor: calibration, the improver's sandbox, every
  evaluation and the re-scoring included. Not the process's imports, paid once per
  process (this module imports everything first). Goal: within 1.3x of the ideal, a
  ratio of at least 0.77.
- pipeline-server-span-vs-ideal-8-in-flight: the first request's arrival to the last
  reply, the part of the run the server was needed: how full the pipe was kept.
- pipeline-server-span-vs-steady-state-8-in-flight: that span against the best a sender
  can do that sends each request the moment a lane frees (steady_state_s, 7.5 s here).
  No sender that cannot tell the slow requests ahead reaches the ideal: at the end fewer
  requests are left than lanes, and a slow one among them runs on alone (1.25x the ideal
  with this schedule). What is lost against this baseline is the host's own time.

The ratio is ideal / measured (a cost, as every `s` figure): 1.0 is the ideal, 0.5 twice
its wall time. The task is the knapsack example (a fixed, deterministic utility: two
instances, milliseconds each), so the model's latency dominates and the figure measures
the pipelining, not the scoring.
"""

from __future__ import annotations

import heapq
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import openai  # noqa: F401 - imported here, so that the run's wall time holds none

from stop.bench import Figure, figure
from stop.bench.latency_server import MODEL, LatencySchedule, LatencyServer, Served
from stop.defaults import SERVER, override
from stop.errors import StopError
from stop.improve import improve
from stop.records import ImproveConfig, ModelSettings
from stop.wiring import Run

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]
TARGET = _ROOT / "examples" / "knapsack.py"
UTILITY = _ROOT / "examples" / "knapsack_utility.py"

IN_FLIGHT = 8  # the backend's limit on requests at once, and the samples per call
REQUESTS = 64  # completions in the run
# The scenario (2 s, every eighth 10 s) scaled down by 4 so that the run takes
# seconds: the tail is what decides how much a batch-at-a-time run loses.
SCHEDULE = LatencySchedule(base_s=0.5, long_s=2.5, every=8)
# Not a key anyone has: a developer's real OPENAI_API_KEY must not go to the loopback.
_KEY_ENV = "STOP_BENCH_PIPELINE_KEY"

# Rewrites of examples/knapsack.py that the server hands out in turn, each marked with its
# request number so that no two are the same program: every reply is evaluated, as a real
# model's varied replies are.
VARIANTS = (
    '''def pack(weights, values, capacity):
    """Take the items in order while they fit."""
    picked, load = [], 0
    for i, weight in enumerate(weights):
        if load + weight <= capacity:
            picked.append(i)
            load += weight
    return picked
''',
    '''def pack(weights, values, capacity):
    """Greedy by value per unit of weight."""
    order = sorted(range(len(weights)), key=lambda i: values[i] / weights[i], reverse=True)
    picked, load = [], 0
    for i in order:
        if load + weights[i] <= capacity:
            picked.append(i)
            load += weights[i]
    return picked
''',
    '''def pack(weights, values, capacity):
    """Greedy by value."""
    picked, load = [], 0
    for i in sorted(range(len(weights)), key=lambda i: -values[i]):
        if load + weights[i] <= capacity:
            picked.append(i)
            load += weights[i]
    return picked
''',
    '''def pack(weights, values, capacity):
    """Exact: the best of every subset that fits."""
    from itertools import combinations

    items = range(len(weights))
    subsets = [s for r in range(len(weights) + 1) for s in combinations(items, r)]
    fits = [s for s in subsets if sum(weights[i] for i in s) <= capacity]
    return list(max(fits, key=lambda s: sum(values[i] for i in s)))
''',
    '''def pack(weights, values, capacity):
    """0/1 knapsack by dynamic programming over capacities."""
    best = [(0, [])] * (capacity + 1)
    for i, weight in enumerate(weights):
        for c in range(capacity, weight - 1, -1):
            value = best[c - weight][0] + values[i]
            if value > best[c][0]:
                best[c] = (value, best[c - weight][1] + [i])
    return best[capacity][1]
''',
    '''def pack(weights, values, capacity):
    """Lightest first."""
    picked, load = [], 0
    for i in sorted(range(len(weights)), key=lambda i: weights[i]):
        if load + weights[i] <= capacity:
            picked.append(i)
            load += weights[i]
    return picked
''',
)


def reply(number: int, body: dict[str, Any]) -> str:
    """The completion for request `number`: a whole program in a python block."""
    program = VARIANTS[number % len(VARIANTS)] + f"# variant {number}\n"
    return f"Here is a variation.\n\n```python\n{program}```\n"


def _run_improve(url: str, requests: int, in_flight: int, runs_dir: Path) -> None:
    """`stop improve --improver map_elites` as the CLI builds it, on the openai backend."""
    config = ImproveConfig(
        target=TARGET,
        utility=str(UTILITY),
        improver="map_elites",
        model=ModelSettings(
            backend="openai",
            options={
                "model": MODEL,
                "base_url": url,
                "api_key_env": _KEY_ENV,
                "concurrency": in_flight,
            },
        ),
        budget=override(
            SERVER.improve,
            model_calls=requests,
            max_responses_per_call=in_flight,
            # One for the original and one for each reply: the model's budget, not the
            # utility's, ends the run.
            evaluations=requests + 1,
        ),
        runs_dir=runs_dir,
        use_cache=False,  # every request goes to the server
    )
    with Run(config.runs_dir, config.model, use_cache=False) as run:
        result = improve(run, config)
    if result.status != "completed":
        raise StopError(f"the benchmark's improve run failed: {result.improver.error}")


def ideal_s(served: list[Served], in_flight: int) -> float:
    """The least wall time `served` could take with `in_flight` requests at every moment."""
    return sum(s.latency_s for s in served) / in_flight


def steady_state_s(served: list[Served], in_flight: int) -> float:
    """The wall time of `served` sent in their order, each the moment one of `in_flight`
    lanes comes free, with no time lost between: the best a steady-state sender can do
    without knowing which requests will be slow. Above the ideal by the drain at the end,
    when fewer requests are left than lanes (at most (1 - 1/in_flight) x the longest)."""
    lanes = [0.0] * in_flight
    for s in sorted(served, key=lambda s: s.number):
        heapq.heappush(lanes, heapq.heappop(lanes) + s.latency_s)
    return max(lanes)


def bench_pipeline(
    requests: int = REQUESTS, in_flight: int = IN_FLIGHT, schedule: LatencySchedule = SCHEDULE
) -> list[Figure]:
    with (
        tempfile.TemporaryDirectory(prefix="stop-bench-pipeline-") as tmp,
        LatencyServer(schedule, reply) as server,
    ):
        started = time.monotonic()
        _run_improve(server.url, requests, in_flight, Path(tmp))
        finished = time.monotonic()
        wall = finished - started
        served = server.served
        most = server.max_in_flight
    if not served:
        raise StopError("the benchmark's improve run sent no request to the server")
    if len(served) != requests:
        log.warning("the server served %d requests of the %d budgeted", len(served), requests)
    ideal, steady = ideal_s(served, in_flight), steady_state_s(served, in_flight)
    first, last = min(s.started for s in served), max(s.ended for s in served)
    span = last - first
    log.info(
        "pipeline: %d requests served, at most %d at once (limit %d); wall %.2f s (%.2f s "
        "before the first request, %.2f s after the last reply), server busy %.2f s, "
        "steady state %.2f s, ideal %.2f s: %.2fx the ideal",
        len(served),
        most,
        in_flight,
        wall,
        first - started,
        finished - last,
        span,
        steady,
        ideal,
        wall / ideal,
    )
    name = f"{in_flight}-in-flight"
    return [
        figure(f"pipeline-wall-vs-ideal-{name}", ideal, wall, "s", higher_is_better=False),
        figure(f"pipeline-server-span-vs-ideal-{name}", ideal, span, "s", higher_is_better=False),
        figure(
            f"pipeline-server-span-vs-steady-state-{name}",
            steady,
            span,
            "s",
            higher_is_better=False,
        ),
    ]
