"""The speed utility: same answers as the original program, in less time.

Each input is timed from a fresh copy of the program (module body plus one call), the
fastest of several repeats kept, so a program cannot look fast by caching answers
between calls. score = original time / candidate time.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from stop.errors import BadInput
from stop.sandbox.runner import Limits, SandboxResult
from stop.scoring.utility import (
    MAX_FEEDBACK,
    Evaluation,
    Feedback,
    Target,
    Utility,
    UtilityOptions,
    shown,
)

REPEAT = 5
# The kernel's count, less an empty program's, is good to about ±15 µs (README): below
# this, programs cannot be told apart, and every faster one scores as this fast.
_MIN_TIME_S = 2e-5
_CALIBRATION_TIMEOUT_S = 120.0


def resolve_entry(target: Target, entry: str | None) -> str:
    try:
        tree = ast.parse(target.source, filename=str(target.path))
    except SyntaxError as exc:
        raise BadInput(f"{target.path} has a syntax error at line {exc.lineno}: {exc.msg}") from exc
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if entry is not None:
        if entry not in functions:
            defined = ", ".join(functions) or "no functions"
            raise BadInput(f"--entry {entry}: {target.path} defines {defined}")
        return entry
    if target.path.stem in functions:
        return target.path.stem
    if len(functions) == 1:
        return functions[0]
    raise BadInput(
        f"cannot tell which function of {target.path} to time: pass --entry "
        f"(it defines {', '.join(functions) or 'no functions'})"
    )


def _parse_inputs(text: str, where: str) -> list[list[Any]]:
    try:
        inputs = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(inputs, list) or not inputs or not all(isinstance(a, list) for a in inputs):
        raise BadInput(
            f"{where} must be a non-empty JSON list of argument lists, e.g. [[20], [25]]"
        )
    return inputs


def resolve_inputs(target: Target, inputs: str | None, entry: str) -> list[list[Any]]:
    if inputs is not None:
        return _parse_inputs(inputs, "--inputs")
    sidecar = target.path.with_name(f"{target.path.stem}.inputs.json")
    if sidecar.is_file():
        return _parse_inputs(sidecar.read_text(), str(sidecar))
    tree = ast.parse(target.source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry)
    if not fn.args.args and not fn.args.posonlyargs:
        return [[]]
    raise BadInput(f"no workload for {entry}: pass --inputs '[[25]]' or create {sidecar.name}")


class SpeedUtility(Utility):
    name = "speed"
    score_range = "[0, inf): original time / candidate time; 1.0 is as fast as the original"
    # Medians of interleaved timings on a 2-core machine still wander by several percent.
    min_improvement = 0.10
    noisy = True
    prefetch = True

    def __init__(self, entry: str, inputs: list[list[Any]], options: UtilityOptions) -> None:
        super().__init__()
        self.entry, self.inputs, self.timeout_s = entry, inputs, options.timeout_s
        # The description must not depend on measured times: a prompt that changes from
        # run to run would defeat the response cache.
        limit = (
            f"longer than {options.timeout_s:g} s"
            if options.timeout_s
            else "more than three times as long as the original (at least 2 s)"
        )
        self.description = (
            "Programs are scored by speed, in a sandbox. For each argument list in "
            f"{json.dumps(inputs)}, a fresh copy of the program is executed and `{entry}(*args)` "
            f"is called; the time of both together is measured, the fastest of {REPEAT} repeats "
            "kept. Every result must equal the "
            "original program's result exactly: a wrong answer, a crash, or running "
            f"{limit} scores 0. Otherwise score = original time / new time "
            "(1.0 is as fast as the original; higher is better). Answer with the complete program "
            f"in one ```python block, keeping the function `{entry}` and its signature."
        )

    def calibrate(self, target: Target) -> None:
        """Time the original: its results are the expected ones, its time the baseline."""
        limits = Limits(wall_s=self.timeout_s or _CALIBRATION_TIMEOUT_S)
        baseline = self._run(target.source, limits)
        reply = baseline.value if baseline.status == "ok" else None
        if not isinstance(reply, dict) or reply.get("outcome") != "ok":
            why = (reply or {}).get("error") if isinstance(reply, dict) else baseline.error
            raise BadInput(f"the original {target.path} fails on its inputs: {why}")
        self.expected = reply["outputs"]
        self.baseline_time_s = max(sum(reply["times"]), _MIN_TIME_S)
        # A candidate as slow as the original finishes in about the calibration's time.
        self.limits = Limits(wall_s=self.timeout_s or max(2.0, 3 * baseline.wall_s))

    def _run(self, program: str, limits: Limits) -> SandboxResult:
        payload = {"code": program, "entry": self.entry, "inputs": self.inputs, "repeat": REPEAT}
        # numpy takes a fifth of a second to import: it is loaded before the timed worker
        # forks, for the programs that mention it, so that the measurement is the
        # program's and not the import's (any other module imports inside as usual).
        preload = ("numpy",) if "numpy" in program else ()
        return self.run_job("call", payload, limits, preload=preload)

    def evaluate(self, program: str) -> Evaluation:
        result = self._run(program, self.limits)
        if result.status != "ok":
            return Evaluation(
                status=result.status, score=0.0, seconds=result.wall_s, detail=result.error
            )
        reply = result.value if isinstance(result.value, dict) else {}
        evaluation = self._judge(result, reply)
        return evaluation.model_copy(update={"findings": result.findings})

    def _judge(self, result: SandboxResult, reply: dict) -> Evaluation:
        outcome = reply.get("outcome")
        if outcome != "ok":
            status = outcome if outcome in ("syntax_error", "crash", "wrong_answer") else "crash"
            return Evaluation(
                status=status,
                score=0.0,
                seconds=result.wall_s,
                detail=str(reply.get("error"))[:500],
            )
        outputs, times = reply.get("outputs"), reply.get("times")
        if _canonical(outputs) != _canonical(self.expected):
            feedback = _mismatches(self.inputs, self.expected, outputs)
            return Evaluation(
                status="wrong_answer",
                score=0.0,
                seconds=result.wall_s,
                detail=_describe(feedback[0]) if feedback else "wrong answer",
                feedback=feedback,
            )
        try:
            elapsed = max(float(sum(times)), _MIN_TIME_S)
        except (TypeError, ValueError):
            return Evaluation(
                status="crash", score=0.0, seconds=result.wall_s, detail="malformed timing reply"
            )
        return Evaluation(
            status="ok",
            score=self.baseline_time_s / elapsed,
            seconds=result.wall_s,
            metrics={"time_s": elapsed, "baseline_time_s": self.baseline_time_s},
        )


def _canonical(value: Any) -> str:
    # Exact comparison: 1, 1.0 and True are different answers.
    return json.dumps(value, sort_keys=True)


def _mismatches(inputs: list, expected: list, got: Any) -> list[Feedback]:
    """The argument lists whose result differs from the original's (the workload and the
    original's results are no secret: the model sees the one and can compute the other)."""
    if not isinstance(got, list) or len(got) != len(expected):
        return [Feedback(kind="wrong_answer", message="returned the wrong number of results")]
    return [
        Feedback(kind="wrong_answer", input=shown(args), expected=shown(want), actual=shown(have))
        for args, want, have in zip(inputs, expected, got, strict=True)
        if _canonical(want) != _canonical(have)
    ][:MAX_FEEDBACK]


def _describe(feedback: Feedback) -> str:
    if feedback.input is None:
        return feedback.message or "wrong answer"
    return f"for args {feedback.input}: expected {feedback.expected}, got {feedback.actual}"


def build(target: Target, options: UtilityOptions) -> SpeedUtility:
    entry = resolve_entry(target, options.entry)
    return SpeedUtility(entry, resolve_inputs(target, options.inputs, entry), options)
