"""`stop bench-mutators` (OpenELM-style): how good a model is as a mutation operator.

For each model, on a fixed toy set of slow-but-correct programs, it asks for rewrites
(whole programs) and for edits (search/replace blocks or diffs, applied by
stop/search/edits.py), scores every mutation with the speed utility in the sandbox, and
reports the rates of valid (it runs), correct (same results as the original) and
improving (at least the speed utility's 10% faster) mutations, and tokens per
improvement.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from stop.helpers import EDIT_INSTRUCTIONS, extract_code
from stop.llm.model import LanguageModel
from stop.records import UtilityOptions
from stop.scoring.utility import Target
from stop.search.edits import apply_reply
from stop.wiring import Run

log = logging.getLogger(__name__)

# name -> (program, workload as JSON argument lists). Each is correct and needlessly slow.
TOYS: dict[str, tuple[str, str]] = {
    "fib": (
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "[[22]]",
    ),
    "count_primes": (
        "def count_primes(n):\n"
        "    count = 0\n"
        "    for k in range(2, n):\n"
        "        if all(k % d for d in range(2, k)):\n"
        "            count += 1\n"
        "    return count\n",
        "[[3000]]",
    ),
    "has_duplicates": (
        "def has_duplicates(values):\n"
        "    for i in range(len(values)):\n"
        "        for j in range(len(values)):\n"
        "            if i != j and values[i] == values[j]:\n"
        "                return True\n"
        "    return False\n",
        "[[" + str(list(range(1500))) + "]]",
    ),
    "sum_of_squares": (
        "def sum_of_squares(n):\n"
        "    squares = []\n"
        "    for k in range(n):\n"
        "        squares = squares + [k * k]\n"
        "    return sum(squares)\n",
        "[[6000]]",
    ),
}

EXPERTISE = "You are an expert programmer, especially skilled at optimizing algorithms."
MODES = ("rewrite", "edit")


class MutatorRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    mode: str  # "rewrite": whole programs; "edit": search/replace blocks or diffs
    target: str  # a toy, or "all"
    mutations: int
    valid: int  # the program ran on the workload (a right or wrong result)
    correct: int  # same results as the original
    improving: int  # correct and at least 10% faster
    edits_applied: int  # edit mode: replies whose edits applied cleanly
    tokens: int

    @property
    def tokens_per_improvement(self) -> float | None:
        return self.tokens / self.improving if self.improving else None

    def rates(self) -> dict[str, float]:
        n = self.mutations or 1
        return {
            "valid": self.valid / n,
            "correct": self.correct / n,
            "improving": self.improving / n,
        }


class Steps(Protocol):
    """Where progress goes (stop/cli/progress.py): a step begins, a step ends."""

    def begin(self, text: str) -> None: ...

    def end(self, text: str) -> None: ...


def _prompt(program: str, mode: str, description: str) -> str:
    ask = EDIT_INSTRUCTIONS if mode == "edit" else "Answer with the complete program."
    return (
        f"Make this program faster without changing its results:\n```python\n{program}```\n\n"
        f"It is scored like this:\n{description}\n\n{ask}"
    )


def bench_model(
    name: str,
    run: Run,
    model: LanguageModel,
    samples: int,
    toys: list[str],
    workdir: Path,
    steps: Steps | None = None,
) -> list[MutatorRow]:
    """Rows per (mode, toy) for one model, and a row per mode over all toys; `steps`
    hears of each request to the model and each mutation scored."""
    rows = []
    for mode in MODES:
        per_mode = []
        for toy in toys:
            source, inputs = TOYS[toy]
            path = workdir / f"{toy}.py"
            path.write_text(source)
            target = Target(path=path, source=source)
            utility = run.utility("speed", target, UtilityOptions(inputs=inputs), evaluations=0)
            before = model.usage.tokens
            what = f"{name}, {mode}, {toy}"
            if steps:
                steps.begin(f"{what}: asking the model for {samples} mutation(s)")
            replies = model.batch_prompt(
                EXPERTISE, [_prompt(source, mode, utility.description)] * samples, 0.8
            )
            row = MutatorRow(
                model=name,
                mode=mode,
                target=toy,
                mutations=len(replies),
                valid=0,
                correct=0,
                improving=0,
                edits_applied=0,
                tokens=0,
            )
            for i, reply in enumerate(replies, 1):
                if mode == "edit":
                    outcome = apply_reply(source, reply)
                    program = outcome.program
                    row.edits_applied += outcome.mode == "edits"
                else:
                    program = extract_code(reply)
                if program is None:
                    if steps:
                        steps.end(f"{what}: mutation {i}/{len(replies)}: no program")
                    continue
                if steps:
                    steps.begin(f"{what}: scoring mutation {i}/{len(replies)}")
                evaluation = utility.evaluate(program)
                row.valid += evaluation.status in ("ok", "wrong_answer")
                row.correct += evaluation.status == "ok"
                improving = evaluation.status == "ok" and utility.improves(evaluation.score, 1.0)
                row.improving += improving
                if steps:
                    said = "improving" if improving else evaluation.status.replace("_", " ")
                    steps.end(f"{what}: mutation {i}/{len(replies)}: {said}")
            row.tokens = model.usage.tokens - before
            log.info("%s %s %s: %s", name, mode, toy, row.rates())
            per_mode.append(row)
        rows += per_mode
        rows.append(_total(name, mode, per_mode))
    return rows


def _total(name: str, mode: str, rows: list[MutatorRow]) -> MutatorRow:
    summed = {
        field: sum(getattr(r, field) for r in rows)
        for field in ("mutations", "valid", "correct", "improving", "edits_applied", "tokens")
    }
    return MutatorRow(model=name, mode=mode, target="all", **summed)
