"""Comparisons of improvers on tasks: `stop compare` (any improvers, same model and
budget) and `stop transfer` (an improver on tasks it was not optimized on, against the
seed improver and the tasks' seed solutions: the shape of STOP's transfer table).

Every column is measured the same way: `trials` meta-utility tests, run as the
meta-utility runs them (two at a time, the same sandboxes and limits), the columns'
trials taken in turn. The seed solution's column is the improver that returns its
input unchanged, so on a task whose score depends on time (maxcut's 0.1 s per graph) it
meets the same load, and the same machine, as the others.
"""

from __future__ import annotations

import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, ConfigDict

from stop.records import Budget, TestResult, Usage
from stop.scoring.meta import MetaUtility
from stop.scoring.task import TaskSpec
from stop.wiring import Run

# Student's t, 97.5th percentile, by degrees of freedom (a 95% two-sided interval);
# past 30 the normal's 1.96 is within 4%.
_T975 = {
    1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
    10: 2.23, 11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11,
    18: 2.10, 19: 2.09, 20: 2.09, 21: 2.08, 22: 2.07, 23: 2.07, 24: 2.06, 25: 2.06,
    26: 2.06, 27: 2.05, 28: 2.05, 29: 2.05, 30: 2.04,
}  # fmt: skip

# The seed solution's column: an improver that changes nothing, run like the others.
UNCHANGED = """def improve_algorithm(initial_solution, utility, language_model):
    return initial_solution
"""


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float
    # None with one value: a single trial says nothing about how far the next may fall.
    low: float | None
    high: float | None
    n: int


class TransferRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    seed_solution: Interval
    seed_improver: Interval
    improver: Interval


def interval(values: list[float]) -> Interval:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean=mean, low=None, high=None, n=len(values))
    half = _T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean=mean, low=mean - half, high=mean + half, n=len(values))


class CompareRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    improver: str
    score: Interval  # test split, over the trials
    calls: int  # language-model completions, all trials
    tokens: int
    seconds: float  # wall time, the trials' own added up (two run at a time)
    failed: int  # trials whose improver raised, hung or returned no program
    edits: dict[str, int]  # how replies asked for as edits were used
    rerank_saved: int  # candidates the reranker ranked that were never evaluated


def compare(
    improvers: dict[str, str],
    tasks: list[TaskSpec],
    run: Run,
    *,
    trials: int,
    budget: Budget,
    seed: int = 0,
    parallel: int = 2,
) -> list[CompareRow]:
    """Each improver (name -> source) runs `trials` times on each task's seed solution
    under the same model and budget; the programs it returns are scored on the test
    split. Trial i uses seed i for every improver, so they meet the same draws.

    The trials of all improvers on a task share one queue (see `order`), `parallel` at a
    time as the meta-utility runs its tests."""
    rows = []
    for task in tasks:
        # Each improver its own meta-utility: a reranker learns only from its own trials.
        metas = {}
        for name in improvers:
            meta = MetaUtility([task], run, tests=trials, budget=budget, evaluations=0, seed=seed)
            meta.label = name
            metas[name] = meta
        done = _in_turn(improvers, metas, trials, parallel)
        for name in improvers:
            mine = [done[name, i] for i in range(trials)]
            tests = [result for result, _, _ in mine]
            usage = sum((used for _, used, _ in mine), Usage())
            rows.append(
                CompareRow(
                    task=task.name,
                    improver=name,
                    score=interval([t.test for t in tests]),
                    calls=usage.calls,
                    tokens=usage.tokens,
                    seconds=sum(seconds for _, _, seconds in mine),
                    failed=sum(t.improver_status != "ok" for t in tests),
                    edits={
                        k.removeprefix("edits_"): v
                        for k, v in usage.model_dump().items()
                        if k.startswith("edits_")
                    },
                    rerank_saved=metas[name].rank_stats(task.name).saved,
                )
            )
    return rows


Trial = tuple[TestResult, Usage, float]  # a test, what it spent, its wall seconds


def order(names: list[str], trials: int) -> list[tuple[str, int]]:
    """The queue of (improver, trial index): trial 1 of each, then trial 2 of each, ...,
    each round's order turned by one. A time-limited task's score follows the machine: its
    speed drifts over minutes (a maxcut graph took 0.094-0.099 s of CPU, ten minutes later
    0.098-0.103 s, against a 0.1 s limit), and a trial's CPU time grows by a few percent
    with what runs beside it. Improvers measured one after the other meet different
    machines; taken in turn, and each as often first as last, they meet the same."""
    return [(names[(i + j) % len(names)], i) for i in range(trials) for j in range(len(names))]


def _in_turn(
    improvers: dict[str, str], metas: dict[str, MetaUtility], trials: int, parallel: int
) -> dict[tuple[str, int], Trial]:
    """(improver, trial index) -> its trial, run `parallel` at a time, trial-major."""

    def trial(job: tuple[str, int]) -> Trial:
        name, index = job
        started = time.monotonic()
        result, usage = metas[name].test(improvers[name], index)
        return result, usage, time.monotonic() - started

    queue = order(list(improvers), trials)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return dict(zip(queue, pool.map(trial, queue), strict=True))


def transfer(
    improver: str,
    seed_improver: str,
    tasks: list[TaskSpec],
    run: Run,
    *,
    trials: int,
    budget: Budget,
    seed: int = 0,
) -> list[TransferRow]:
    """Test-split scores: each improver, and the one that changes nothing (the seed
    solution's column), runs `trials` times on each task's seed solution."""
    improvers = {"seed solution": UNCHANGED, "seed": seed_improver, "improver": improver}
    rows = compare(improvers, tasks, run, trials=trials, budget=budget, seed=seed)
    scores = {(r.task, r.improver): r.score for r in rows}
    return [
        TransferRow(
            task=task.name,
            seed_solution=scores[task.name, "seed solution"],
            seed_improver=scores[task.name, "seed"],
            improver=scores[task.name, "improver"],
        )
        for task in tasks
    ]
