"""Transfer: how an improver does on tasks it was not optimized on, against the seed
improver and the tasks' seed solutions (the shape of STOP's transfer table)."""

from __future__ import annotations

import math
import statistics

from pydantic import BaseModel, ConfigDict

from stop.llm.base import Backend
from stop.llm.cache import ResponseCache
from stop.meta import BudgetPerTest, MetaUtility
from stop.task import TaskSpec, TaskUtility

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


def transfer(
    improver: str,
    seed_improver: str,
    tasks: list[TaskSpec],
    backend: Backend,
    *,
    trials: int,
    budget: BudgetPerTest,
    cache: ResponseCache | None,
    seed: int = 0,
) -> list[TransferRow]:
    """Test-split scores: each improver runs `trials` times on each task's seed solution."""
    rows = []
    for task in tasks:
        meta = MetaUtility(
            [task], backend, tests=trials, budget=budget, evaluations=0, seed=seed, cache=cache
        )
        baseline = TaskUtility(task, budget=0).evaluate_split(task.seed_solution, "test").score
        rows.append(
            TransferRow(
                task=task.name,
                seed_solution=interval([baseline]),
                seed_improver=interval([t.test for t in meta.score(seed_improver).tests]),
                improver=interval([t.test for t in meta.score(improver).tests]),
            )
        )
    return rows
