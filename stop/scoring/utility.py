"""Utilities: a visible description shown to the model, a hidden scorer, a budget, a use count.

Built-in utilities live in the `utilities` package (`--utility speed`); a user's own is a
Python file that defines `build(target, options) -> Utility` (`--utility my_util.py`).
A utility file is the user's own code and runs in the host; the programs it scores run
in the sandbox. A file that defines `evaluate(program_path)` and no `build` is an
OpenEvolve evaluator (stop/scoring/evaluator.py), which runs only in the sandbox.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from stop.errors import BadInput, BudgetExhausted, StopError
from stop.records import MAX_FEEDBACK, Evaluation, Feedback, UtilityOptions, shown, trim
from stop.sandbox.executor import Executor, LocalExecutor
from stop.sandbox.runner import Limits, SandboxResult
from stop.scoring.blocks import Blocks
from stop.sources import read_source

log = logging.getLogger(__name__)

# What a utility file needs, importable from here.
__all__ = [
    "MAX_FEEDBACK",
    "Evaluation",
    "Feedback",
    "Target",
    "Utility",
    "UtilityOptions",
    "load_utility",
    "shown",
    "trim",
]


class Target(BaseModel):
    """The program being improved."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    source: str


class Utility(ABC):
    name: str
    description: str  # what the model is shown: honest and complete
    score_range: str = "[0, 1]"
    # Relative margin a score must beat the original's by to count as an improvement:
    # timings are noisy, correctness scores are not.
    min_improvement: float = 0.0
    noisy: bool = False  # scores vary between evaluations of one program (timings)
    language: str = "python"  # of the programs it scores
    # Safe to evaluate ahead of the improver's request, in a thread (stop/host/prefetch.py):
    # a sandboxed run of the program, cheap and thread-safe, that spends no model calls.
    prefetch: bool = False

    def __init__(self, budget: int = 0, executor: Executor | None = None) -> None:
        # Both are the host's to set (stop/wiring.py): the budget of evaluations an
        # improver may ask for, and where the sandboxed runs go.
        self.budget = budget
        self.executor: Executor = executor or LocalExecutor()
        self.uses = 0
        self.blocks: Blocks | None = None  # the target's EVOLVE-BLOCKs: the rest is fixed

    def calibrate(self, target: Target) -> None:
        """Measure what scoring needs before the run starts (the speed utility times the
        original); raise BadInput if the target itself fails. Most utilities need nothing."""
        return None

    @abstractmethod
    def evaluate(self, program: str) -> Evaluation:
        """The hidden scorer: sandboxed, never counted against the budget."""

    def judge(self, program: str) -> Evaluation:
        """`evaluate`, after what every utility shares: a program that changes the target
        outside its EVOLVE-BLOCKs is rejected unrun, and a scorer that raises scores the
        program 0 with the exception as the reason, so a user's bug loses no run."""
        why = self.blocks.violation(program) if self.blocks else None
        if why:
            return Evaluation(status="rejected", score=0.0, seconds=0.0, detail=why)
        try:
            evaluation = self.evaluate(program)
            if not isinstance(evaluation, Evaluation):
                raise TypeError(
                    f"evaluate returned a {type(evaluation).__name__}, not an Evaluation"
                )
            return evaluation
        except StopError:
            raise  # ours: a sandbox that cannot be set up is never the program's fault
        except Exception as exc:  # noqa: BLE001 - the user's scorer, reported as its reason
            log.warning("utility %s raised on a program", self.name, exc_info=True)
            why = f"the utility's scorer raised {type(exc).__name__}: {exc}"
            return Evaluation(status="crash", score=0.0, seconds=0.0, detail=trim(why))

    def run_job(
        self,
        kind: str,
        payload: dict[str, Any],
        limits: Limits,
        preload: tuple[str, ...] = (),
        read_paths: tuple[str, ...] = (),
    ) -> SandboxResult:
        """A sandbox job on this utility's executor."""
        return self.executor.run(kind, payload, limits, preload, read_paths)

    def use(self, program: str, evaluated: Evaluation | None = None) -> Evaluation:
        """One budgeted evaluation on behalf of an improver (`evaluated`: of this program,
        already done ahead of the request)."""
        if self.uses >= self.budget:
            raise BudgetExhausted(f"utility budget of {self.budget} evaluations spent")
        self.uses += 1
        return (evaluated or self.judge(program)).with_feedback()

    def improves(self, score: float, baseline: float) -> bool:
        return score > baseline * (1 + self.min_improvement) if baseline > 0 else score > baseline


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def load_utility(spec: str, target: Target, options: UtilityOptions) -> Utility:
    """Build a utility from a built-in name (`speed`, `lpn`, `lmc:add-4`: a name and an
    argument for its build function) or a path to a Python file. A utility module may
    declare `Options`, a pydantic model: `options.custom` (--utility-option key=value) is
    validated by it and handed to build() converted."""
    argument = None
    if ":" in spec and not spec.endswith(".py"):
        spec, argument = spec.split(":", 1)
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise BadInput(f"no utility file {spec}")
        from stop.scoring import evaluator  # it builds on this module

        source = _read_source(path)
        defined = evaluator.names(source)
        if "build" not in defined and "evaluate" in defined:
            # An OpenEvolve evaluator: run only in the sandbox, never imported here.
            custom = _custom(spec, evaluator, options.custom)
            return evaluator.build(path, source, target, options.timeout_s, custom)
        if "build" not in defined:
            raise BadInput(
                f"utility file {spec} defines neither build(target, options) (a stop "
                "utility) nor evaluate(program_path) (an OpenEvolve evaluator)"
            )
        _flag_host_execution(spec, source)
        module_spec = importlib.util.spec_from_file_location(f"stop_user_utility_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise BadInput(f"cannot load utility file {spec}")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise BadInput(f"utility file {spec} fails to load: {exc}") from exc
    elif _NAME.match(spec):
        try:
            module = importlib.import_module(f"utilities.{spec}")
        except ModuleNotFoundError as exc:
            if exc.name != f"utilities.{spec}":
                raise
            raise BadInput(
                f"unknown utility {spec!r}; built in: {', '.join(builtin_utilities())}"
            ) from exc
    else:
        raise BadInput(f"unknown utility {spec!r}; built in: {', '.join(builtin_utilities())}")
    build = getattr(module, "build", None)
    if not callable(build):
        raise BadInput(f"utility {spec} defines no build(target, options) function")
    options = options.model_copy(update={"custom": _custom(spec, module, options.custom)})
    return build(target, options) if argument is None else build(target, options, argument)


def _read_source(path: Path) -> str:
    source = read_source(path, "utility file")
    try:
        compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BadInput(f"utility file {path} has a syntax error at line {exc.lineno}") from exc
    return source


def _flag_host_execution(spec: str, source: str) -> None:
    """A utility file is the user's code and runs here; the programs it scores must not.
    Code that runs a program itself (exec, importlib, subprocess) is said loudly."""
    from stop.scoring.audit import audit_source

    runners = ("subprocess", "importlib", "multiprocessing")
    running = [
        f
        for f in audit_source(source)
        if f.kind == "dynamic_code" or f.text.split()[-1].split(".")[0] in runners
    ]
    if running:
        first = running[0]
        log.warning(
            "utility %s runs code itself (line %d: %s): the programs it scores must run in "
            "the sandbox, through run_job or a TaskSpec (README: Writing a utility)",
            spec,
            first.line,
            first.text,
        )


def builtin_utilities() -> list[str]:
    import utilities

    folder = Path(utilities.__file__).parent
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def _custom(spec: str, module: object, given: dict[str, Any]) -> dict[str, Any]:
    declared = getattr(module, "Options", None)
    if declared is None:
        if given:
            raise BadInput(f"utility {spec} takes no --utility-option (it declares no Options)")
        return {}
    try:
        return declared.model_validate(given).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "options"
        fields = ", ".join(declared.model_fields) or "none"
        raise BadInput(
            f"--utility-option {key}: {first['msg']} (utility {spec} takes: {fields})"
        ) from exc
