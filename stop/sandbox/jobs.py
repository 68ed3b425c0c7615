"""Jobs a sandbox child can run. This code is trusted; what it executes is not.

Builtins used after untrusted code has run are bound here at import time, so that a
program that rebinds `builtins.type` cannot change how its own output is checked.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import math
import os
import resource
import sys
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


_MADV_POPULATE_WRITE = 23  # Linux 5.14+


def _prefault() -> None:
    """Take the copy-on-write faults of a fresh fork now, not inside the measurement.

    Without this, a program's first writes to each inherited page cost about half a
    millisecond in all, more than a fast program's whole run.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            for line in maps:
                span, perms = line.split()[:2]
                if perms[1] == "w" and perms[3] == "p":
                    start, end = (int(x, 16) for x in span.split("-"))
                    libc.madvise(start, end - start, _MADV_POPULATE_WRITE)
    except (OSError, AttributeError, ValueError):
        pass  # an older kernel: the measurement is just noisier


def _time_in_worker(code: Any, entry: str, args: list) -> dict:
    """Runs in the forked worker: the only process that executes the candidate."""
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    t0 = _perf_counter()
    exec(code, namespace)
    fn = namespace.get(entry)
    if not callable(fn):
        return {"outcome": "crash", "error": f"the program defines no function {entry!r}"}
    out = fn(*args)
    elapsed = _perf_counter() - t0
    try:
        return {"outcome": "ok", "output": to_plain(out), "time": elapsed}
    except NotPlain as exc:
        return {"outcome": "wrong_answer", "error": _str(exc)}


_READY = b"R"


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _cpu_clock(pid: int) -> float | None:
    """CPU seconds process `pid` has used so far (clock_getcpuclockid), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        clock, now = ctypes.c_int(), _Timespec()
        if libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
            return None
        if libc.clock_gettime(clock, ctypes.byref(now)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return now.tv_sec + now.tv_nsec * 1e-9


def _worker(code: Any, entry: str, args: list, max_reply: int) -> tuple[dict, float | None]:
    """Fork a worker to run one call; return its reply and the CPU seconds it used.

    The worker holds no descriptor to the host, so it cannot speak for the sandbox; it
    may not start processes or threads, so all its work shows in its own CPU time, which
    the kernel counts and the worker cannot forge.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: untrusted code runs below
        try:
            os.close(r)
            os.closerange(3, w)
            os.closerange(w + 1, 1 << 16)
            # One process for this uid (the sandbox parent) is already running, so no
            # fork or thread can start: every cycle spent lands in this process's CPU time.
            resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
            _prefault()
            os.write(w, _READY)  # the parent reads our CPU clock here: what follows is the work
            try:
                reply = _time_in_worker(code, entry, args)
            except BaseException as exc:  # noqa: BLE001 - SystemExit too is the program's fault
                reply = {"outcome": "crash", "error": _trimmed_traceback(exc)}
            data = json.dumps(reply).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001, S110 - the program may have closed it
                    pass
            os._exit(0)
    os.close(w)
    chunks, size = [], 0
    with os.fdopen(r, "rb") as pipe:
        ready = pipe.read(1) == _READY
        start_cpu = _cpu_clock(pid) if ready else None
        while chunk := pipe.read(1 << 16):
            size += _len(chunk)
            if size > max_reply:
                os.kill(pid, 9)
                break
            chunks.append(chunk)
    _, status, usage = os.wait4(pid, 0)
    # None: the kernel would not tell, and the time cannot be checked.
    cpu = None if start_cpu is None else usage.ru_utime + usage.ru_stime - start_cpu
    if size > max_reply:
        return {"outcome": "crash", "error": "the result is too large"}, cpu
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        why = (
            f"killed by signal {-os.waitstatus_to_exitcode(status)}"
            if os.WIFSIGNALED(status)
            else ("exited before returning")
        )
        return {"outcome": "crash", "error": why}, cpu
    return (reply if _type(reply) is dict else {"outcome": "crash", "error": "bad reply"}), cpu


def _plausible(reported: Any, cpu: float | None, idle_cpu: float, reply_bytes: int) -> bool:
    """Does the worker's own clock agree with the kernel's count of its CPU time?

    The worker's measure is the precise one, but it comes from untrusted code. It must
    be a finite, non-negative number, and not much below the CPU time the kernel charged
    the worker, less what an empty worker costs and what writing the reply costs.
    """
    if _type(reported) is not float or not math.isfinite(reported) or reported < 0:
        return False
    if cpu is None:
        return True
    work = cpu - idle_cpu
    slack = 0.002 + 0.25 * work + reply_bytes * 50e-9  # seconds
    return reported >= work - slack


def call_job(payload: dict, _chan: Any) -> dict:
    """Run `entry(*args)` for each input, each call in a fresh worker forked from here.

    Every timed repeat starts from a fresh copy of the module, so the time counts
    module-level work and no result can be cached from one call to the next.
    """
    try:
        code = _compile(payload["code"], "<candidate>")
        idle = _compile("def _idle():\n    return None\n", "<idle>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    entry, repeat = payload["entry"], max(1, int(payload.get("repeat", 1)))
    max_reply = int(payload.get("max_reply_bytes", 16 << 20))
    idle_cpu = max(_worker(idle, "_idle", [], 1 << 10)[1] or 0.0 for _ in range(3))
    outputs: list[Any] = []
    times: list[float] = []
    for args in payload["inputs"]:
        best = math.inf
        for r in range(repeat):
            reply, cpu = _worker(code, entry, args, max_reply)
            if reply.get("outcome") != "ok":
                return {"outcome": reply.get("outcome"), "error": _str(reply.get("error"))[:2000]}
            if not _plausible(reply.get("time"), cpu, idle_cpu, _len(json.dumps(reply))):
                return {
                    "outcome": "crash",
                    "error": "reported a time the kernel's CPU accounting contradicts",
                }
            best = min(best, reply["time"])
            if r == 0:
                outputs.append(reply.get("output"))
        times.append(_float(best))
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
