"""Comparisons of improvers on tasks: `stop compare` (any improvers, same model and
budget) and `stop transfer` (an improver on tasks it was not optimized on, against the
seed improver and the tasks' seed solutions: the shape of STOP's transfer table)."""

from __future__ import annotations

import math
import statistics
import time

from pydantic import BaseModel, ConfigDict

from stop.records import Budget
from stop.scoring.meta import MetaUtility
from stop.scoring.task import TaskSpec, TaskUtility
from stop.wiring import Run

# Student's t, 97.5th percentile, by degrees of freedom (a 95% two-sided interval).
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float
    low: float
    high: float
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
        return Interval(mean=mean, low=mean, high=mean, n=len(values))
    half = _T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean=mean, low=mean - half, high=mean + half, n=len(values))


class CompareRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    improver: str
    score: Interval  # test split, over the trials
    calls: int  # language-model completions, all trials
    tokens: int
    seconds: float  # wall time, all trials
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
) -> list[CompareRow]:
    """Each improver (name -> source) runs `trials` times on each task's seed solution
    under the same model and budget; the programs it returns are scored on the test
    split. Trial i uses seed i for every improver, so they meet the same draws."""
    rows = []
    for task in tasks:
        for name, source in improvers.items():
            # Each improver its own meta-utility: a reranker learns only from its own trials.
            meta = MetaUtility([task], run, tests=trials, budget=budget, evaluations=0, seed=seed)
            started = time.monotonic()
            score = meta.score(source)
            usage = score.usage
            rows.append(
                CompareRow(
                    task=task.name,
                    improver=name,
                    score=interval([t.test for t in score.tests]),
                    calls=usage.calls,
                    tokens=usage.tokens,
                    seconds=time.monotonic() - started,
                    failed=sum(t.improver_status != "ok" for t in score.tests),
                    edits={
                        k.removeprefix("edits_"): v
                        for k, v in usage.model_dump().items()
                        if k.startswith("edits_")
                    },
                    rerank_saved=meta.rank_stats(task.name).saved,
                )
            )
    return rows


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
    """Test-split scores: each improver runs `trials` times on each task's seed solution."""
    improvers = {"seed": seed_improver, "improver": improver}
    both = compare(improvers, tasks, run, trials=trials, budget=budget, seed=seed)
    rows = []
    for task in tasks:
        mine = {r.improver: r.score for r in both if r.task == task.name}
        scorer = TaskUtility(task, 0, run.executor)
        baseline = scorer.evaluate_split(task.seed_solution, "test").score
        rows.append(
            TransferRow(
                task=task.name,
                seed_solution=interval([baseline]),
                seed_improver=mine["seed"],
                improver=mine["improver"],
            )
        )
    return rows
