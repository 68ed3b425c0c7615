"""Utilities: a visible description shown to the model, a hidden scorer, a budget, a use count.

Built-in utilities live in the `utilities` package (`--utility speed`); a user's own is a
Python file that defines `build(target, options) -> Utility` (`--utility my_util.py`).
A utility file is the user's own code and runs in the host; the programs it scores run
in the sandbox.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput, BudgetExhausted

Status = Literal["ok", "wrong_answer", "timeout", "crash", "syntax_error", "no_code"]

MAX_FEEDBACK = 3  # failures reported per evaluation: enough to fix, too few to memorize
FEEDBACK_CHARS = 300  # of each input, output and message


def trim(text: str, limit: int = FEEDBACK_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object) -> str:
    """A value as JSON (a string in quotes: "44" is not 44), trimmed."""
    return trim(json.dumps(value, default=repr))


class Feedback(BaseModel):
    """One failure, structured so that an improver can put it in front of the model
    (LangProp-style): the input, what was expected (where that is not hidden data), what
    came back, or the exception and a trimmed traceback."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["wrong_answer", "exception", "timeout", "syntax_error"]
    input: str | None = None
    expected: str | None = None
    actual: str | None = None
    message: str | None = None


_FEEDBACK_KIND = {"crash": "exception", "no_code": "syntax_error"}


class Evaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    score: float  # 0 unless status is "ok"
    seconds: float  # wall time of the evaluation, sandbox start-up included
    detail: str | None = None  # why it failed, trimmed
    metrics: dict[str, float] = {}
    findings: list[str] = []  # what the sandbox's guard blocked or noticed
    feedback: list[Feedback] = []  # at most MAX_FEEDBACK failures, for improvers

    def with_feedback(self) -> Evaluation:
        """This evaluation with at least one feedback entry when it failed: a utility
        that reports no structured failures still says what went wrong."""
        if self.feedback or self.status == "ok":
            return self
        kind = _FEEDBACK_KIND.get(self.status, self.status)
        return self.model_copy(
            update={"feedback": [Feedback(kind=kind, message=trim(self.detail or self.status))]}
        )


class Target(BaseModel):
    """The program being improved."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    source: str


class UtilityOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: int = 5  # evaluations the improver may ask for
    entry: str | None = None
    inputs: str | None = None  # JSON list of argument lists
    timeout_s: float | None = None  # per evaluation; None: chosen from the original's time


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

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.uses = 0

    @abstractmethod
    def evaluate(self, program: str) -> Evaluation:
        """The hidden scorer: sandboxed, never counted against the budget."""

    def use(self, program: str, evaluated: Evaluation | None = None) -> Evaluation:
        """One budgeted evaluation on behalf of an improver (`evaluated`: of this program,
        already done ahead of the request)."""
        if self.uses >= self.budget:
            raise BudgetExhausted(f"utility budget of {self.budget} evaluations spent")
        self.uses += 1
        return (evaluated or self.evaluate(program)).with_feedback()

    def improves(self, score: float, baseline: float) -> bool:
        return score > baseline * (1 + self.min_improvement) if baseline > 0 else score > baseline


_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def load_utility(spec: str, target: Target, options: UtilityOptions) -> Utility:
    """Build a utility from a built-in name (`speed`, `lpn`, `lmc:add-4`: a name and an
    argument for its build function) or a path to a Python file."""
    argument = None
    if ":" in spec and not spec.endswith(".py"):
        spec, argument = spec.split(":", 1)
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise BadInput(f"no utility file {spec}")
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
    return build(target, options) if argument is None else build(target, options, argument)


def builtin_utilities() -> list[str]:
    import utilities

    folder = Path(utilities.__file__).parent
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
