"""The Little Man Computer of the expert-iteration paper: the reference machine, section
2.1's reward, the Add-N and random-program task families, and a numpy batch executor
whose outcomes are identical to the reference's."""

from stop.lmc.batch import BatchResult, compile_programs, execute, prepare_and_execute, run_batch
from stop.lmc.machine import (
    T_MAX,
    LMCSyntaxError,
    Outcome,
    Program,
    parse,
    reward,
    run,
    score_outcomes,
)
from stop.lmc.tasks import (
    Pair,
    Task,
    add_task,
    add_tasks,
    random_task,
    random_tasks,
    task_by_name,
)

__all__ = [
    "T_MAX",
    "BatchResult",
    "LMCSyntaxError",
    "Outcome",
    "Pair",
    "Program",
    "Task",
    "add_task",
    "add_tasks",
    "compile_programs",
    "execute",
    "parse",
    "prepare_and_execute",
    "random_task",
    "random_tasks",
    "reward",
    "run",
    "run_batch",
    "score_outcomes",
    "task_by_name",
]
