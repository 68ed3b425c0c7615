"""Jobs a sandbox child can run. This code is trusted; what it executes is not.

Builtins used after untrusted code has run are bound here at import time, so that a
program that rebinds `builtins.type` cannot change how its own output is checked.
"""

from __future__ import annotations

import builtins
import math
import time
import traceback
from typing import Any

from stop.sandbox.proxies import LanguageModelProxy, UtilityProxy

_type, _isinstance, _len, _str, _float = type, isinstance, len, str, float
_perf_counter = time.perf_counter
_PLAIN = (int, float, str, bool, type(None))
_MAX_DEPTH = 20


class NotPlain(Exception):
    """The program returned something other than plain JSON-like data."""


def to_plain(value: Any, depth: int = 0) -> Any:
    """Copy `value` into exact built-in types, refusing subclasses and other objects.

    A subclass could lie through __eq__ or __repr__, so only exact types pass.
    """
    if depth > _MAX_DEPTH:
        raise NotPlain("nested too deeply")
    t = _type(value)
    if t in _PLAIN:
        if t is float and not math.isfinite(value):
            return _str(value)  # JSON has no NaN or inf; keep them distinguishable
        return value
    if t is list or t is tuple:
        return [to_plain(v, depth + 1) for v in value]
    if t is dict:
        if not all(_type(k) is str for k in value):
            raise NotPlain("dict keys must be str")
        return {k: to_plain(v, depth + 1) for k, v in value.items()}
    raise NotPlain(f"returned a {t.__name__!s}, not plain data")


def _trimmed_traceback(exc: BaseException, limit: int = 1500) -> str:
    text = "".join(traceback.format_exception_only(_type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f for f in frames if f.filename.startswith("<")]  # the untrusted code's frames
    if where:
        text = f"line {where[-1].lineno}: {text}"
    return text[-limit:]


def _compile(code: str, filename: str) -> Any:
    return compile(code, filename, "exec", dont_inherit=True)


def call_job(payload: dict, _chan: Any) -> dict:
    """Run `entry(*args)` for each input; time each call from a fresh module.

    Every timed repeat re-executes the module body, so the time counts module-level
    work and no result can be cached from one call to the next.
    """
    try:
        code = _compile(payload["code"], "<candidate>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    entry, repeat = payload["entry"], max(1, int(payload.get("repeat", 1)))
    outputs: list[Any] = []
    times: list[float] = []
    try:
        for args in payload["inputs"]:
            best = math.inf
            for r in range(repeat):
                namespace = {"__name__": "__candidate__", "__builtins__": builtins}
                t0 = _perf_counter()
                exec(code, namespace)
                fn = namespace.get(entry)
                if not callable(fn):
                    return {
                        "outcome": "crash",
                        "error": f"the program defines no function {entry!r}",
                    }
                out = fn(*args)
                elapsed = _perf_counter() - t0
                best = min(best, elapsed)
                if r == 0:
                    outputs.append(to_plain(out))
            times.append(_float(best))
    except NotPlain as exc:
        return {"outcome": "wrong_answer", "error": _str(exc)}
    except BaseException as exc:  # noqa: BLE001 - SystemExit and friends are the program's fault
        return {"outcome": "crash", "error": _trimmed_traceback(exc)}
    return {"outcome": "ok", "outputs": outputs, "times": times}


def improve_job(payload: dict, chan: Any) -> dict:
    """Run an improver's `improve_algorithm` with proxies to the host's model and utility."""
    try:
        code = _compile(payload["improver"], "<improver>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    language_model = LanguageModelProxy(chan, **payload["language_model"])
    utility = UtilityProxy(chan, **payload["utility"])
    try:
        namespace = {"__name__": "__improver__", "__builtins__": builtins}
        exec(code, namespace)
        fn = namespace.get("improve_algorithm")
        if not callable(fn):
            return {"outcome": "crash", "error": "the improver defines no improve_algorithm"}
        program = fn(payload["initial_solution"], utility, language_model)
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "crash", "error": _trimmed_traceback(exc)}
    if _type(program) is not str:
        return {
            "outcome": "crash",
            "error": f"improve_algorithm returned {_type(program).__name__}",
        }
    return {"outcome": "ok", "program": program}


JOBS = {"call": call_job, "improve": improve_job}
