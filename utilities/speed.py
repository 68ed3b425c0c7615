"""The speed utility: same answers as the original program, in less time.

Each input is timed from a fresh copy of the program (module body plus one call), the
fastest of several repeats kept, so a program cannot look fast by caching answers
between calls. score = original time / candidate time.
"""

from __future__ import annotations

import ast
import json
import logging
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

log = logging.getLogger(__name__)

REPEAT = 5
# The kernel's count, less an empty program's, is good to about ±15 µs (README): below
# this, programs cannot be told apart, and every faster one scores as this fast.
_MIN_TIME_S = 2e-5
# The original is timed under a wall limit (seconds) that doubles while it runs out (a
# busy machine is slower; the target is not bad for that), in three tries at most and up
# to the bound; each of its calls is held to a CPU limit, which load does not inflate,
# so that a target that never returns is found bad without waiting on the wall clock.
_CALIBRATION_WALL_S = 30.0
_CALIBRATION_MAX_WALL_S = 120.0
_CALIBRATION_TRIES = 3
_CALIBRATION_CALL_CPU_S = 20.0  # five repeats of such a call fit in the last wall limit
# A candidate's call may use this many times the CPU time of the original's slowest,
# and at least the floor (seconds): time the kernel counts, the same under any load.
_CPU_HEADROOM = 3.0
_MIN_CALL_CPU_S = 1.0
# The host's wall limit on a candidate's whole evaluation is a backstop (every call is
# already bounded by its CPU limit and a wall backstop that does not count waiting for a
# CPU, worker.py): this many times the original's evaluation, so that a machine busier
# than it was at calibration still finishes an honest candidate, and at least the floor.
_WALL_HEADROOM = 20.0
_MIN_WALL_S = 30.0


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
            else "more than three times the original's CPU time on one call (at least 1 s)"
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
        baseline = self._run_original(target)
        reply = baseline.value if baseline.status == "ok" else None
        if not isinstance(reply, dict) or reply.get("outcome") != "ok":
            why = (reply or {}).get("error") if isinstance(reply, dict) else baseline.error
            raise BadInput(f"the original {target.path} fails on its inputs: {why}")
        self.expected = reply["outputs"]
        self.baseline_time_s = max(sum(reply["times"]), _MIN_TIME_S)
        if self.timeout_s:
            # The user's limit is the candidates' limit, as given. An original that needs
            # more CPU time than that (which no load changes) is bad input: every candidate
            # as slow as it would time out.
            needed_s = REPEAT * sum(reply["times"])
            if needed_s > self.timeout_s:
                raise BadInput(
                    f"the original {target.path} needs about {needed_s:.3g} s of CPU time "
                    f"for one evaluation ({REPEAT} runs of each input), more than --timeout "
                    f"{self.timeout_s:g} s"
                )
            self.limits = Limits(wall_s=self.timeout_s)
            return
        self.limits = Limits(
            wall_s=max(_MIN_WALL_S, _WALL_HEADROOM * baseline.wall_s),
            call_cpu_s=max(_MIN_CALL_CPU_S, _CPU_HEADROOM * max(reply["times"])),
        )

    def _run_original(self, target: Target) -> SandboxResult:
        """The original's run, tried again with twice the wall limit while the host's wall
        clock stops it. A limit the worker enforced (CPU time, or a wall backstop that does
        not count waiting for a CPU) is no matter of load: that answer stands."""
        first_s = self.timeout_s or _CALIBRATION_WALL_S
        last_s = max(first_s, _CALIBRATION_MAX_WALL_S)
        cpu_s = self.timeout_s or _CALIBRATION_CALL_CPU_S
        # A limit already at the bound is not tried twice.
        walls = list(dict.fromkeys(min(first_s * 2**i, last_s) for i in range(_CALIBRATION_TRIES)))
        result = self._run(target.source, Limits(wall_s=walls[0], call_cpu_s=cpu_s))
        for ran_out_s, wall_s in zip(walls, walls[1:], strict=False):
            if result.status != "timeout":
                break
            log.info("speed: the original ran out of %g s; timing it with %g s", ran_out_s, wall_s)
            result = self._run(target.source, Limits(wall_s=wall_s, call_cpu_s=cpu_s))
        return result

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
            # "timeout": a call ran past its CPU limit (Limits.call_cpu_s), or slept past
            # the worker's backstop.
            known = ("syntax_error", "crash", "wrong_answer", "timeout")
            status = outcome if outcome in known else "crash"
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
