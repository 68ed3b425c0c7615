"""Jobs a sandbox child can run. This code is trusted; what it executes is not.

Candidates run in workers (stop/sandbox/worker.py), one per call; an improver runs in the
sandbox's init itself, with proxies to the host's model and utility.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import statistics
import sys
from typing import Any

from stop import helpers
from stop.sandbox import guard, worker
from stop.sandbox.proxies import LanguageModelProxy, UtilityProxy
from stop.sandbox.remote import evaluate_job

_type, _str, _float = type, str, float


def _compile(code: str, filename: str) -> Any:
    return compile(code, filename, "exec", dont_inherit=True)


def _report(chan: Any, findings: list[str]) -> None:
    """The guard's findings go to the host on their own (the init is trusted)."""
    for text in findings:
        chan.send({"type": "finding", "text": text})


def call_job(payload: dict, chan: Any) -> dict:
    """Run `entry(*args)` for each input, each call in a fresh worker forked from here,
    and time it by the CPU time the kernel charged the worker, less what a worker that
    runs an empty program costs on the same path (measured here, now).

    Every timed repeat starts from a fresh copy of the module and fresh folders, so the
    time counts module-level work and no result can be carried from one call to the
    next; a repeat that answers differently from the first is a wrong answer.
    """
    try:
        code = _compile(payload["code"], "<candidate>")
        idle = _compile("def _idle():\n    return None\n", "<idle>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    entry, repeat = payload["entry"], max(1, int(payload.get("repeat", 1)))
    max_reply = int(payload.get("max_reply_bytes", 16 << 20))
    idle_cpu = statistics.median(
        worker.run(idle, "_idle", [], 1 << 10).cpu_s or 0.0 for _ in range(3)
    )
    outputs: list[Any] = []
    times: list[float] = []
    for args in payload["inputs"]:
        best, first = math.inf, None
        for r in range(repeat):
            call = worker.run(code, entry, args, max_reply)
            _report(chan, call.findings)
            if call.reply.get("outcome") != "ok":
                error = _str(call.reply.get("error"))[:2000]
                return {"outcome": call.reply.get("outcome"), "error": error}
            if call.cpu_s is None:
                return {"outcome": "crash", "error": "the kernel would not say how long it took"}
            output = call.reply.get("output")
            answer = json.dumps(output, sort_keys=True)
            if r == 0:
                outputs.append(output)
                first = answer
            elif answer != first:
                return {"outcome": "wrong_answer", "error": "answered differently when run again"}
            best = min(best, max(call.cpu_s - idle_cpu, 0.0))
        times.append(_float(best))
    return {"outcome": "ok", "outputs": outputs, "times": times}


# An input whose call runs over its CPU limit by at most GRACE is run again, TRIES times
# in all at most, and passes if any run is within the limit. What else runs on the
# machine inflates the kernel's count of one call by a few percent (the same 0.084 s call
# read 0.080-0.089 s on 2 cores, more under load), so one reading would pass or fail a
# program that needs 0.097 s of its 0.1 s by chance; the least of three is its own cost,
# as the speed utility takes the best of its repeats.
GRACE = 1.1
TRIES = 3


def retries(inputs: int) -> int:
    """Runs again that one solve job may spend in all: bounded, so that its wall limit
    (solve_wall_s) holds even when every input is near its limit."""
    return 2 + inputs // 10


def solve_wall_s(inputs: int, per_call_s: float) -> float:
    """The host's wall limit for a solve job: every input's limit with its grace, the
    runs again, and start-up."""
    return 10.0 + inputs * 0.05 + (inputs + retries(inputs)) * per_call_s * GRACE


def solve_job(payload: dict, chan: Any) -> dict:
    """Run `entry(*args)` once per input, each in a fresh worker with its own time limit,
    and report every input's outcome: a task's scorer counts what was solved."""
    try:
        code = _compile(payload["code"], "<candidate>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    entry, limit_s = payload["entry"], float(payload["per_call_s"])
    max_reply = int(payload.get("max_reply_bytes", 16 << 20))
    results = []
    seeds = payload.get("seeds") or [0] * len(payload["inputs"])
    spare = [retries(len(payload["inputs"]))]
    for args, seed in zip(payload["inputs"], seeds, strict=True):
        reply = _solve(code, entry, args, seed, limit_s, max_reply, chan, spare)
        if "error" in reply:
            reply["error"] = _str(reply["error"])[:500]
        results.append(reply)
    return {"outcome": "ok", "results": results}


def _solve(
    code: Any,
    entry: str,
    args: list,
    seed: int,
    limit_s: float,
    max_reply: int,
    chan: Any,
    spare: list[int],
) -> dict:
    """One input's reply: the first run within `limit_s` of CPU time, else a timeout.
    `spare`: the job's runs again left, spent here."""
    for attempt in range(TRIES):
        call = worker.run(
            code, entry, args, max_reply, timed=False, limit_s=limit_s * GRACE, seed=seed
        )
        _report(chan, call.findings)
        if call.reply.get("outcome") == "timeout":
            break  # past the grace, or asleep past the backstop: no run would pass it
        if call.cpu_s is None or call.cpu_s <= limit_s:
            return call.reply
        if attempt == TRIES - 1 or spare[0] == 0:
            break
        spare[0] -= 1
    return {"outcome": "timeout", "error": f"took longer than {limit_s:g} s"}


def improve_job(payload: dict, chan: Any) -> dict:
    """Run an improver's `improve_algorithm` with proxies to the host's model and utility."""
    try:
        code = _compile(payload["improver"], "<improver>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    # STOP's improvers import their helpers as `helpers`: the same functions, one module.
    sys.modules.setdefault("helpers", helpers)
    language_model = LanguageModelProxy(chan, **payload["language_model"])
    utility = UtilityProxy(chan, **payload["utility"])
    # Each finding goes to the host as it happens, as a message of its own: what the
    # improver does to the guard afterwards cannot take it back.
    write, dumps, wfd = os.write, json.dumps, chan.fileno()

    def report(text: str) -> None:
        try:
            write(wfd, dumps({"type": "finding", "text": text[:200]}).encode() + b"\n")
        except OSError:
            pass

    guard.install(worker.writable(), report)
    return _improve(code, payload["initial_solution"], utility, language_model)


def _improve(code: Any, initial_solution: str, utility: Any, language_model: Any) -> dict:
    try:
        namespace = {"__name__": "__improver__", "__builtins__": builtins}
        exec(code, namespace)
        fn = namespace.get("improve_algorithm")
        if not callable(fn):
            return {"outcome": "crash", "error": "the improver defines no improve_algorithm"}
        program = fn(initial_solution, utility, language_model)
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "crash", "error": worker.trimmed_traceback(exc)}
    if _type(program) is not str:
        return {
            "outcome": "crash",
            "error": f"improve_algorithm returned {_type(program).__name__}",
        }
    return {"outcome": "ok", "program": program}


JOBS = {"call": call_job, "solve": solve_job, "improve": improve_job, "evaluate": evaluate_job}
