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
from stop.sandbox import jail
from stop.sandbox.executor import Executor, LocalExecutor
from stop.sandbox.runner import Limits, SandboxResult
from stop.scoring import sameness
from stop.scoring.blocks import Blocks
from stop.scoring.evalcache import EvaluationCache
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
    # Scores a program alike every time, given its fingerprint: then one evaluation of a
    # program serves every copy of it, in this run and the next (stop/scoring/evalcache.py).
    # False unless a utility says so: a user's scorer may time, sample or remember, and a
    # wrong reuse gives a program a score it never earned; a missed one costs a run.
    deterministic: bool = False

    def __init__(self, budget: int = 0, executor: Executor | None = None) -> None:
        # Both are the host's to set (stop/wiring.py): the budget of evaluations an
        # improver may ask for, and where the sandboxed runs go.
        self.budget = budget
        self.executor: Executor = executor or LocalExecutor()
        self.uses = 0
        self.blocks: Blocks | None = None  # the target's EVOLVE-BLOCKs: the rest is fixed
        # Where a cacheable utility's evaluations are kept across runs (stop/wiring.py);
        # None: nowhere. Set by the host, like the budget.
        self.evaluations: EvaluationCache | None = None
        self._memo: str | None = None  # the fingerprint, once computed
        # Read now, as the code is loaded: an edit to a utility file after it was loaded
        # does not change what this utility runs.
        self._sources = _class_sources(type(self))

    @property
    def cacheable(self) -> bool:
        """Whether an earlier evaluation of the same program may stand for a new one:
        deterministic and not noisy (timings are measured again, always)."""
        return self.deterministic and not self.noisy

    def fingerprint(self) -> str:
        """A digest of everything besides the program that decides `judge`'s evaluation:
        the utility's name, class and the source files of its classes, description, score
        range and language, the target's EVOLVE-BLOCK rule, the sandbox kind (a weak
        sandbox lets a program read what a jail hides), stop's code version (its version,
        the interpreter's, the sandbox's and scoring's sources), and what the utility
        adds in `_fingerprint_parts`. Computed when asked: the host sets `blocks` after
        the utility is built. Budget, executor and use count decide nothing."""
        kind = type(self)
        material = {
            "utility": getattr(self, "name", kind.__name__),
            "class": f"{kind.__module__}.{kind.__qualname__}",
            "sources": getattr(self, "_sources", None) or _class_sources(kind),
            "description": getattr(self, "description", None),
            "score_range": self.score_range,
            "language": self.language,
            "blocks": self.blocks.fixed if self.blocks else None,
            "sandbox": _sandbox_kind(),
            "code": sameness.code_version(),
            "parts": self._fingerprint_parts(),
        }
        return sameness.digest(material)

    def _fingerprint_parts(self) -> dict[str, Any]:
        """What else decides this utility's evaluations: its options, instances, limits.
        By default the instance's attributes that are plain data (numbers, strings, lists,
        dicts, pydantic records), which is where a user's utility keeps its options; a
        utility with other state that decides scores overrides this."""
        return {
            key: value
            for key, value in vars(self).items()
            if key not in _BOOKKEEPING and sameness.plain(value)
        }

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
        cache = self.evaluations if self.cacheable else None
        if cache is not None:
            key = sameness.program_key(program, self.language)
            found = cache.get(self._fingerprint(), key)
            if found is not None:
                return found
        evaluation = self._judged(program)
        if cache is not None:
            cache.put(self._fingerprint(), key, evaluation)
        return evaluation

    def _fingerprint(self) -> str:
        # Once per utility: hashing a task's instances takes a while.
        if self._memo is None:
            self._memo = self.fingerprint()
        return self._memo

    def _judged(self, program: str) -> Evaluation:
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
        self.charge()
        return (evaluated or self.judge(program)).with_feedback()

    def charge(self) -> None:
        """Count one use of the budget, or raise BudgetExhausted if none is left."""
        if self.uses >= self.budget:
            raise BudgetExhausted(f"utility budget of {self.budget} evaluations spent")
        self.uses += 1

    def improves(self, score: float, baseline: float) -> bool:
        return score > baseline * (1 + self.min_improvement) if baseline > 0 else score > baseline


# The host's, set on every utility, deciding no score (blocks is fingerprinted apart).
_BOOKKEEPING = frozenset(
    {"budget", "executor", "uses", "blocks", "_sources", "evaluations", "_memo"}
)


def _class_sources(kind: type) -> list[str]:
    """The digests of the files that define `kind` and its bases up to Utility (whose
    own file is in the code version)."""
    return [
        sameness.source_digest(c)
        for c in kind.__mro__
        if issubclass(c, Utility) and c is not Utility
    ]


def _sandbox_kind() -> str:
    try:
        return jail.sandbox_kind()
    except jail.JailError:  # no sandbox can run here: a utility that needs one says so
        return "none"


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
