"""OpenEvolve-style evaluators as utilities: `--utility evaluator.py`, where the file
defines `evaluate(program_path)` returning a dict of metrics, or an object with `metrics`
and `artifacts` (OpenEvolve's EvaluationResult), and optionally `evaluate_stage1/2/3`,
run as OpenEvolve's cascade.

The evaluator is never run in the host: not even imported. Each evaluation is one
sandbox job in which the evaluator and the program run in processes of their own
(stop/sandbox/remote.py); the timeout kills both. The score is OpenEvolve's:
`combined_score` when the evaluator reports it, else the mean of its numeric metrics.
Metrics, artifacts, the evaluator's errors and the tail of what it printed reach the
improver as the evaluation's metrics and feedback.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput
from stop.records import MAX_FEEDBACK, Evaluation, Feedback, Status, trim
from stop.sandbox.remote import STAGES, score_of
from stop.sandbox.runner import Limits
from stop.scoring import sameness
from stop.scoring.utility import Target, Utility

# OpenEvolve's defaults: a stage runs only if the ones before it scored this much.
THRESHOLDS = (0.5, 0.75, 0.9)
TIMEOUT_S = 300.0  # OpenEvolve's evaluation timeout
PRELOAD = ("numpy", "numpy.random", "numpy.linalg")


class Options(BaseModel):
    """--utility-option for an evaluator."""

    model_config = ConfigDict(extra="forbid")

    cascade_thresholds: list[float] = list(THRESHOLDS)
    memory_mb: int = 4096  # each process's address space: numpy and scipy reserve much
    # The evaluator scores one program alike every time, so an evaluation may be reused
    # (stop/scoring/evalcache.py). Off unless said: the program's calls are seeded (the
    # n-th with n), but the evaluator's own code is the user's and often times the
    # program or draws unseeded random numbers.
    deterministic: bool = False


def names(source: str) -> set[str]:
    """The names a Python source binds at its top level (defs, assignments, imports),
    read without running it."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bound


def _docstring(source: str) -> str | None:
    try:
        return ast.get_docstring(ast.parse(source))
    except SyntaxError:
        return None


class EvaluatorUtility(Utility):
    score_range = "any number: higher is better"
    prefetch = True

    def __init__(
        self, path: Path, source: str, target: Target, timeout_s: float | None, options: Options
    ) -> None:
        super().__init__()
        self.path, self.source, self.options = path.resolve(), source, options
        self.target_name = target.path.name
        self.timeout_s = timeout_s or TIMEOUT_S
        self.name = path.stem
        self.deterministic = options.deterministic
        self._beside = sameness.folder_digest(self.path.parent)  # as the evaluator was loaded
        stages = [s for s in STAGES if s in names(source)]
        how = (
            f"It runs in stages ({', '.join(stages)}); a stage runs only if the ones "
            f"before scored at least {', '.join(f'{t:g}' for t in options.cascade_thresholds)}"
            " in turn. "
            if stages
            else ""
        )
        about = _docstring(source)
        self.description = (
            f"The program is scored by the evaluator {path.name}"
            + (f" ({about.strip()})" if about else "")
            + f". It imports the program from a file and calls its functions. {how}"
            "Score: the evaluator's combined_score metric when it reports one, else the mean "
            f"of its numeric metrics; higher is better. Each evaluation may take at most "
            f"{self.timeout_s:g} s."
        )

    def _limits(self) -> Limits:
        return Limits(wall_s=self.timeout_s + 10.0, memory_mb=self.options.memory_mb)

    def _fingerprint_parts(self) -> dict[str, Any]:
        """The evaluator's source and the Python files beside it (it may import them; the
        sandbox shows it its folder), its options, the name the program is imported
        under, the limits and the preloaded modules' versions. Data files it reads from
        its folder are not covered: one who changes them passes deterministic=false."""
        return {
            "evaluator": sameness.digest(self.source),
            "beside": self._beside,
            "options": self.options.model_dump(mode="json"),
            "program_name": self.target_name,
            "call_s": self.timeout_s,
            "limits": self._limits().model_dump(),
            "modules": sameness.versions(PRELOAD),
        }

    def calibrate(self, target: Target) -> None:
        first = self.evaluate(target.source)
        if first.status != "ok":
            raise BadInput(
                f"evaluator {self.path.name} fails on the original program {target.path}: "
                f"{first.detail}"
            )

    def evaluate(self, program: str) -> Evaluation:
        payload = {
            "program": program,
            "program_name": self.target_name,
            "evaluator": self.source,
            "evaluator_path": str(self.path),
            "thresholds": self.options.cascade_thresholds,
            "call_s": self.timeout_s,
        }
        result = self.run_job(
            "evaluate",
            payload,
            self._limits(),
            preload=PRELOAD,
            read_paths=(str(self.path.parent),),
        )
        printed = (result.stdout + result.stderr).strip()
        if result.status != "ok":
            why = "timed out" if result.status == "timeout" else (result.error or "crashed")
            return Evaluation(
                status=result.status, score=0.0, seconds=result.wall_s, detail=trim(why, 500)
            )
        reply = result.value if isinstance(result.value, dict) else {}
        if reply.get("outcome") != "ok":
            status: Status = "syntax_error" if reply.get("outcome") == "syntax_error" else "crash"
            detail = f"the evaluator failed: {_last_line(str(reply.get('error')))}"
            feedback = [Feedback(kind="exception", message=_tail(str(reply.get("error"))))]
            return Evaluation(
                status=status, score=0.0, seconds=result.wall_s, detail=detail, feedback=feedback
            )
        return _evaluation(reply.get("stages"), printed, result.wall_s, result.findings)


def _evaluation(stages: Any, printed: str, seconds: float, findings: list[str]) -> Evaluation:
    """The stages' merged metrics as one evaluation (OpenEvolve's merge: later stages'
    numbers win; a stage that raised counts as `<stage>_passed: 0`)."""
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        return Evaluation(status="crash", score=0.0, seconds=seconds, detail="bad reply")
    metrics: dict[str, Any] = {}
    feedback: list[Feedback] = []
    for stage in stages:
        error = stage.get("error")
        if error is not None:
            feedback.append(Feedback(kind="exception", message=_tail(str(error))))
            if stage is stages[0]:
                detail = f"the evaluator raised: {_last_line(str(error))}"
                return Evaluation(
                    status="crash", score=0.0, seconds=seconds, detail=detail, feedback=feedback
                )
            metrics[f"{str(stage.get('stage')).removeprefix('evaluate_')}_passed"] = 0.0
            continue
        metrics.update(stage.get("metrics") or {})
        for key, value in (stage.get("artifacts") or {}).items():
            feedback.append(Feedback(kind="wrong_answer", message=trim(f"{key}: {value}")))
    numbers = {
        str(k): float(v)
        for k, v in metrics.items()
        if type(v) in (int, float) and math.isfinite(v) and k != "error"
    }
    texts = {str(k): str(v) for k, v in metrics.items() if type(v) is str}
    # What the evaluator says is wrong comes first, then what it printed.
    said = [Feedback(kind="wrong_answer", message=trim(f"{k}: {v}")) for k, v in texts.items()]
    feedback[:0] = said
    if printed:
        feedback.append(Feedback(kind="exception", message="printed: " + _tail(printed)))
    score = score_of({k: v for k, v in metrics.items() if type(v) is not str})
    if score is None or not math.isfinite(score):
        return Evaluation(
            status="crash",
            score=0.0,
            seconds=seconds,
            detail=f"the evaluator returned no numeric metric (it returned {sorted(metrics)})",
            feedback=feedback[:MAX_FEEDBACK],
        )
    return Evaluation(
        status="ok",
        score=score,
        seconds=seconds,
        detail="; ".join(f"{k}: {v}" for k, v in texts.items())[:500] or None,
        metrics=numbers,
        findings=findings,
        feedback=feedback[:MAX_FEEDBACK],
    )


def _tail(text: str, chars: int = 280) -> str:
    """The end of a traceback or of printed output: where what went wrong is said."""
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return trim(lines[-1] if lines else text, 300)


def build(
    path: Path, source: str, target: Target, timeout_s: float | None, custom: dict
) -> Utility:
    return EvaluatorUtility(path, source, target, timeout_s, Options.model_validate(custom))
