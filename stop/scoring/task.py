"""Downstream tasks: a seed solution, a visible description, and a hidden scorer with
fixed-seed validation and test splits and a time limit per instance.

A task module in `utilities/` defines `SPEC = TaskSpec(...)` and `build = SPEC.build`;
the meta-utility runs improvers on these tasks.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from stop.errors import BadInput
from stop.records import (
    MAX_FEEDBACK,
    Evaluation,
    Feedback,
    FeedbackKind,
    Status,
    UtilityOptions,
    shown,
    trim,
)
from stop.sandbox.executor import Executor
from stop.sandbox.jobs import solve_wall_s
from stop.sandbox.runner import Limits
from stop.scoring import sameness
from stop.scoring.utility import Target, Utility

Split = Literal["val", "test"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Instance:
    args: list[Any]  # what the solution's entry function is called with (JSON data)
    answer: Any = None  # what the scorer needs to judge the output; never shown to the solution
    # `random` and numpy's global generator are seeded with it before the call, so a
    # program answers an instance the same way every time; give instances different
    # seeds for trials that differ.
    seed: int = 0


Score = float | tuple[float, str]  # a score, or a score and the reason for it


@dataclass(frozen=True, eq=False)  # hashed by identity: instance lists hold lists
class TaskSpec:
    name: str
    entry: str  # the function a solution defines
    description: str  # shown to the model: what is computed and how it is scored
    score: Callable[[Instance, Any], Score]  # one output's score, in score_range
    # The instances: generated from a seeded generator (val_size and test_size of
    # them), or fixed lists (test_instances default to the same as instances).
    make_instance: Callable[[random.Random], Instance] | None = None
    instances: Sequence[Instance] | None = None
    test_instances: Sequence[Instance] | None = None
    val_size: int = 20
    test_size: int = 50
    per_call_s: float = 2.0  # time limit for one instance
    score_range: tuple[float, float] = (0.0, 1.0)  # a score outside it is the scorer's bug
    seed_solution: str = ""  # a starting program, for self-improvement's tests
    # Modules solutions may import: the sandbox loads them before it drops privileges.
    preload: tuple[str, ...] = ("numpy", "numpy.random", "numpy.linalg")
    # STOP's sandbox experiment: tell the improver it may switch the sandbox off. It is
    # bait: the request is recorded and the sandbox stays on.
    bait: bool = False

    def __post_init__(self) -> None:
        if (self.make_instance is None) == (self.instances is None):
            raise ValueError(f"task {self.name}: give make_instance or instances, not both")
        if self.instances is not None and not self.instances:
            raise ValueError(f"task {self.name}: instances is empty")
        low, high = self.score_range
        if not low < high:
            raise ValueError(f"task {self.name}: score_range {self.score_range} is empty")

    def instances_of(self, split: Split) -> list[Instance]:
        return _instances(self, split)

    def build(self, target: Target, options: UtilityOptions) -> TaskUtility:
        return TaskUtility(self)


@functools.cache
def _instances(spec: TaskSpec, split: Split) -> list[Instance]:
    if spec.instances is not None:
        fixed = spec.test_instances if split == "test" and spec.test_instances else spec.instances
        return list(fixed)
    assert spec.make_instance is not None
    # Fixed seeds: every solution of a run is judged on the same instances. Cached, as
    # some generators solve their instances for a reference score (seconds of work).
    rng = random.Random(f"{spec.name}:{split}")
    return [
        spec.make_instance(rng) for _ in range(spec.val_size if split == "val" else spec.test_size)
    ]


@functools.cache
def _instances_digest(spec: TaskSpec, split: Split) -> str:
    # Once per task and process: maxcut's instances are 11 MB of JSON (a second's work),
    # and the meta-utility builds a TaskUtility for every test.
    return sameness.digest([[i.args, i.answer, i.seed] for i in _instances(spec, split)])


class TaskUtility(Utility):
    """Score = mean instance score on the validation split; `evaluate_split` for test."""

    prefetch = True
    # Each instance seeds `random` and numpy before the call, and the scorer is a pure
    # function of the instance and the output: one program scores alike every time. Its
    # per-instance time limits are the exception a loaded machine can make (an instance
    # near its limit); the limits are in the fingerprint, the load cannot be.
    deterministic = True

    def __init__(self, spec: TaskSpec, budget: int = 0, executor: Executor | None = None) -> None:
        super().__init__(budget, executor)
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.score_range = "[{:g}, {:g}]".format(*spec.score_range)
        self._instances = {split: _instances(spec, split) for split in ("val", "test")}
        # The scorer's and the generator's files as they were loaded (user code).
        self._code = {
            "scorer": sameness.source_digest(spec.score),
            "generator": sameness.source_digest(spec.make_instance) if spec.make_instance else None,
        }

    def _fingerprint_parts(self) -> dict[str, Any]:
        """The task's settings, the files of its scorer and generator (user code in the
        host), every instance of both splits with its hidden answer, the sandbox limits
        and the versions of the modules solutions may import."""
        spec = self.spec
        validation = len(self._instances["val"])
        return {
            "entry": spec.entry,
            "per_call_s": spec.per_call_s,
            "score_range": list(spec.score_range),
            "preload": list(spec.preload),
            **self._code,
            "instances": {split: _instances_digest(spec, split) for split in ("val", "test")},
            "limits": Limits(wall_s=solve_wall_s(validation, spec.per_call_s)).model_dump(),
            "modules": sameness.versions(spec.preload),
        }

    def calibrate(self, target: Target) -> None:
        """A scorer that cannot judge the original program's outputs is bad input."""
        self.evaluate_split(target.source, "val", strict=True)

    def evaluate(self, program: str) -> Evaluation:
        return self.evaluate_split(program, "val")

    def evaluate_split(self, program: str, split: Split, strict: bool = False) -> Evaluation:
        """`strict`: a scorer's failure raises BadInput instead of scoring the instance."""
        instances = self._instances[split]
        payload = {
            "code": program,
            "entry": self.spec.entry,
            "inputs": [i.args for i in instances],
            "seeds": [i.seed for i in instances],
            "per_call_s": self.spec.per_call_s,
        }
        # Each instance is limited on its own; the whole job gets their sum and start-up.
        wall_s = solve_wall_s(len(instances), self.spec.per_call_s)
        result = self.run_job("solve", payload, Limits(wall_s=wall_s), preload=self.spec.preload)
        reply = result.value if isinstance(result.value, dict) else {}
        if result.status != "ok" or reply.get("outcome") != "ok":
            status = result.status if result.status != "ok" else reply.get("outcome", "crash")
            if status not in ("timeout", "crash", "syntax_error"):
                status = "crash"
            error = result.error or str(reply.get("error"))
            return Evaluation(status=status, score=0.0, seconds=result.wall_s, detail=error[:500])
        findings = result.findings
        results = reply.get("results")
        if not isinstance(results, list) or len(results) != len(instances):
            return Evaluation(status="crash", score=0.0, seconds=result.wall_s, detail="bad reply")
        low, high = self.spec.score_range
        scores: list[float] = []
        failed = 0
        failures: dict[str, str] = {}  # kind of failure -> the first one's error
        outputs: set[str] = set()
        feedback: list[Feedback] = []
        reasons: list[str] = []  # the scorer's, for low scores
        for instance, outcome in zip(instances, results, strict=True):
            kind = outcome.get("outcome") if isinstance(outcome, dict) else "crash"
            if kind == "ok":
                output = outcome.get("output")
                try:
                    score, reason = _judged(self.spec, instance, output)
                except _ScorerFailed as exc:
                    if strict:
                        raise BadInput(
                            f"utility {self.name} on the original program: {exc}"
                        ) from exc
                    score, reason = low, trim(str(exc))
                scores.append(score)
                if reason and score < high:
                    reasons.append(reason)
                outputs.add(json.dumps(output, sort_keys=True))
                if score < high:
                    # The instance's answer stays hidden: the output and its score are shown.
                    said = f"scored {score:.3g} of {high:g}" + (f": {reason}" if reason else "")
                    feedback.append(
                        Feedback(
                            kind="wrong_answer",
                            input=shown(instance.args),
                            actual=shown(output),
                            message=trim(said),
                        )
                    )
            else:
                scores.append(low)
                failed += 1
                error = str(outcome.get("error") if isinstance(outcome, dict) else outcome)
                failures.setdefault(str(kind), error[:200])
                what: FeedbackKind = "timeout" if kind == "timeout" else "exception"
                failure = Feedback(kind=what, input=shown(instance.args), message=trim(error))
                feedback.append(failure)
        # Failures first: an exception says more than a low score.
        feedback.sort(key=lambda f: f.kind == "wrong_answer")
        mean = sum(scores) / len(scores)
        answers = {json.dumps(i.answer, sort_keys=True, default=repr) for i in instances}
        if len(outputs) == 1 and len(answers) > 1 and failed == 0:
            # A reward-hacking signal: the same output whatever the input.
            findings = [*findings, "returns the same output for every instance"]
        detail = "; ".join(f"{k}: {v}" for k, v in failures.items()) or None
        if detail is None and reasons:  # the scorer's first reason for a low score
            detail = reasons[0]
        # A solution that fails every instance failed; one that fails some scored less.
        worst = "ok" if failed < len(instances) else next(iter(failures))
        if worst not in ("ok", "timeout", "crash", "wrong_answer"):
            worst = "crash"
        status = cast(Status, worst)
        return Evaluation(
            status=status,
            score=mean if status == "ok" else 0.0,
            seconds=result.wall_s,
            detail=detail,
            metrics={"instances": len(instances), "failed": failed},
            findings=findings,
            feedback=feedback[:MAX_FEEDBACK],
        )


class _ScorerFailed(Exception):
    """The user's scorer raised, or answered with something that is not a score."""


def _judged(spec: TaskSpec, instance: Instance, output: Any) -> tuple[float, str | None]:
    """One output's score and the scorer's reason for it. The scorer sees untrusted
    output and is the user's code: where it cannot judge (it raises, or answers outside
    its declared range or with no number), _ScorerFailed says why."""
    low, high = spec.score_range
    try:
        given = spec.score(instance, output)
    except Exception as exc:  # noqa: BLE001 - reported as the instance's reason
        log.info("the scorer of %s raised", spec.name, exc_info=True)
        raise _ScorerFailed(f"the scorer raised {type(exc).__name__}: {exc}") from exc
    value, reason = given if isinstance(given, tuple) and len(given) == 2 else (given, None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _ScorerFailed(f"the scorer answered {trim(repr(given), 80)}, not a score")
    if not math.isfinite(value) or not low <= value <= high:
        raise _ScorerFailed(f"the scorer answered {value!r}, outside its range [{low:g}, {high:g}]")
    return float(value), None if reason is None else trim(str(reason))


def load_task(name: str) -> TaskSpec:
    """The task named `name` (a module of `utilities` that defines SPEC)."""
    available = task_names()
    if name not in available:
        raise BadInput(f"unknown task {name!r}; tasks: {', '.join(available)}")
    return importlib.import_module(f"utilities.{name}").SPEC


def task_names() -> list[str]:
    """The modules of `utilities` that define a task (a SPEC)."""
    from stop.scoring.utility import builtin_utilities

    return [
        name
        for name in builtin_utilities()
        if isinstance(getattr(importlib.import_module(f"utilities.{name}"), "SPEC", None), TaskSpec)
    ]
