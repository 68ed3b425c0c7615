"""Throughput of the batch executor against the reference interpreter, measured in one
run on one machine, on programs that loop for close to t_max = 100 steps.

Both sides get the same parsed programs and input lists. The batch side is timed twice:
`prepare_and_execute` (results as arrays: what a search that only needs rewards uses)
and `run_batch` (one reference-style Outcome per row). Measurements alternate between
the two executors and each keeps its best repeat, so that a slow moment of a shared
machine does not land on one side only. The outcomes are checked to be identical.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from stop.errors import StopError
from stop.lmc.batch import prepare_and_execute, run_batch
from stop.lmc.machine import Outcome, Program, parse, run

logger = logging.getLogger(__name__)

# Looping programs, each with a generator of inputs that keeps it running for 89-100
# steps, or past t_max (a step-limit error is a legitimate outcome of a search too).
LOOPING_PROGRAMS: list[tuple[str, Callable[[random.Random], list[int]]]] = [
    # countdown: 2x + 1 steps
    ("SUBL 1 BRP 1 HLT", lambda rng: [rng.randint(45, 49)]),
    # a * b by repeated addition: 7a + 5 steps
    (
        "STA 1 LDL 0 STA 2 LDA 2 ADD 0 STA 2 LDA 1 SUBL 1 STA 1 BRP 7 LDA 2 HLT",
        lambda rng: [rng.randint(12, 13), rng.randint(1, 99)],
    ),
    # the appendix's second example counting up to zero: 3x steps
    ("ADDL 1 BRZ 7 BRA 1 HLT", lambda rng: [-rng.randint(30, 33)]),
    # doubling forever, through int32 wrap-around: stopped at the step limit
    ("ADD 0 STA 0 BRA 1", lambda rng: [1, rng.randint(1, 9)]),
    # the appendix's first example counting down a loaded value: 2x + 4 steps
    ("LDL 1 STA 9 LDA 0 SUB 9 BRP 7 HLT", lambda rng: [0, rng.randint(43, 47)]),
]


def workload(rows: int, seed: int = 0) -> tuple[list[Program], list[list[int]]]:
    rng = random.Random(f"lmc-bench:{seed}")
    parsed = [(parse(text), make) for text, make in LOOPING_PROGRAMS]
    programs, inputs = [], []
    for row in range(rows):
        program, make = parsed[row % len(parsed)]
        programs.append(program)
        inputs.append(make(rng))
    return programs, inputs


def bench_lmc(rows: int = 16384, repeats: int = 3, seed: int = 0) -> list[dict[str, object]]:
    """Runs per second of the reference (baseline) and of the batch executor (value), as
    the benchmark suite's records: [{name, baseline, value, unit, ratio}]."""
    if rows < 1 or repeats < 1:
        raise StopError("bench_lmc needs at least one row and one repeat")
    programs, inputs = workload(rows, seed)
    best = {"reference": float("inf"), "arrays": float("inf"), "outcomes": float("inf")}
    reference: list[Outcome] = []
    batch: list[Outcome] = []
    for _ in range(repeats):
        start = time.perf_counter()
        reference = [run(program, values) for program, values in zip(programs, inputs, strict=True)]
        best["reference"] = min(best["reference"], time.perf_counter() - start)
        start = time.perf_counter()
        prepare_and_execute(programs, inputs)
        best["arrays"] = min(best["arrays"], time.perf_counter() - start)
        start = time.perf_counter()
        batch = run_batch(programs, inputs)
        best["outcomes"] = min(best["outcomes"], time.perf_counter() - start)
    if batch != reference:
        raise StopError("the batch executor's outcomes differ from the reference's")
    mean_steps = sum(outcome.steps for outcome in reference) / rows
    logger.info("%d rows, %.1f steps per run on average", rows, mean_steps)
    baseline = rows / best["reference"]
    results = []
    for name, key in (("lmc-batch-arrays", "arrays"), ("lmc-batch-outcomes", "outcomes")):
        value = rows / best[key]
        results.append(
            {
                "name": name,
                "baseline": round(baseline, 1),
                "value": round(value, 1),
                "unit": "runs/s",
                "ratio": round(value / baseline, 2),
            }
        )
    return results
