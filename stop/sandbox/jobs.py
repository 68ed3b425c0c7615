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
import random
import resource
import select
import sys
import time
import traceback
from typing import Any

from stop.sandbox import guard, jail
from stop.sandbox.confine import die_with_parent
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
    if _str(getattr(t, "__module__", "")).startswith("numpy") and callable(
        getattr(value, "tolist", None)
    ):
        # numpy arrays and scalars: their plain form is data like any other
        return to_plain(value.tolist(), depth + 1)
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


def _writable() -> tuple[str, ...]:
    """The folders the guard lets the job change: in a jail, all of its private ones."""
    cwd = os.getcwd()
    return jail.SCRATCH if cwd == jail.WORKDIR else (cwd,)


def _seed_random() -> None:
    """The same program on the same input gives the same answer, every run."""
    random.seed(0)
    numpy_random = sys.modules.get("numpy.random")  # loaded: jobs that use numpy preload it
    if numpy_random is not None:
        numpy_random.seed(0)


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


def _worker(
    code: Any,
    entry: str,
    args: list,
    max_reply: int,
    timed: bool = True,
    limit_s: float | None = None,
) -> tuple[dict, float | None]:
    """Fork a worker to run one call; return its reply and the CPU seconds it used.

    The worker holds no descriptor to the host, so it cannot speak for the sandbox; it
    may not start processes or threads, so all its work shows in its own CPU time, which
    the kernel counts and the worker cannot forge. That time is read between the moment
    the worker is told to start and the moment its whole reply is in (the outputs are in
    the reply, so the work that produced them came before), each time while the worker
    sleeps: the kernel brings a running process's count up to date only at the next tick.
    Tearing down the worker's memory at exit (milliseconds, and variable) is not counted.
    """
    r, w = os.pipe()
    control_r, control_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker: untrusted code runs below
        try:
            die_with_parent(parent)  # if the host dies, the sandbox and all its workers go
            os.close(r)
            os.close(control_w)
            keep = sorted((w, control_r))
            os.closerange(3, keep[0])
            os.closerange(keep[0] + 1, keep[1])
            os.closerange(keep[1] + 1, 1 << 16)
            # One process for this uid (the sandbox parent) is already running, so no
            # fork or thread can start: every cycle spent lands in this process's CPU time.
            resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
            _seed_random()
            if timed:
                _prefault()
            guard.install(_writable())
            os.write(w, _READY)
            os.read(control_r, 1)  # sleep while the parent reads our CPU clock
            try:
                reply = _time_in_worker(code, entry, args)
            except BaseException as exc:  # noqa: BLE001 - SystemExit too is the program's fault
                reply = {"outcome": "crash", "error": _trimmed_traceback(exc)}
            if guard.findings:
                reply["findings"] = list(guard.findings)
            data = json.dumps(reply).encode() + b"\n"
            while data:
                data = data[os.write(w, data) :]
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.read(control_r, 1)  # sleep again until released
        except BaseException:  # noqa: BLE001 - the harness itself failed: say why
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(0)
    os.close(w)
    os.close(control_r)
    try:
        reply, cpu = _collect(r, control_w, pid, max_reply, timed, limit_s)
    finally:
        os.close(control_w)  # releases the worker
        os.close(r)
    _, status, _ = os.wait4(pid, 0)
    if reply is None:
        why = f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else None
        reply = {"outcome": "crash", "error": why or "exited before returning"}
    return reply, cpu


def _collect(
    r: int, control_w: int, pid: int, max_reply: int, timed: bool, limit_s: float | None
) -> tuple[dict | None, float | None]:
    """Start the worker, read its reply line; return it with the CPU seconds it took."""
    if os.read(r, 1) != _READY:
        return None, None
    start = _cpu_clock_at_rest(pid) if timed or limit_s is not None else None
    os.write(control_w, b"g")
    # The limit is on CPU time, so a busy machine (or a sibling test) does not turn a
    # fast solution into a timeout; wall time gets a generous backstop.
    wall_deadline = None if limit_s is None else _perf_counter() + 5 * limit_s + 1.0
    buffer = bytearray()
    scanned = 0  # bytes known to hold no newline: a huge reply stays linear to read
    while (newline := buffer.find(b"\n", scanned)) < 0:
        scanned = len(buffer)
        if limit_s is not None and not select.select([r], [], [], min(0.01, limit_s))[0]:
            used = _cpu_clock(pid)
            over_cpu = start is not None and used is not None and used - start > limit_s
            if over_cpu or _perf_counter() > wall_deadline:
                os.kill(pid, 9)
                return {"outcome": "timeout", "error": f"took longer than {limit_s:g} s"}, None
            continue
        chunk = os.read(r, 1 << 16)
        if not chunk:
            return None, None
        if _len(buffer) + _len(chunk) > max_reply:
            os.kill(pid, 9)
            return {"outcome": "crash", "error": "the result is too large"}, None
        buffer += chunk
    end = _cpu_clock_at_rest(pid) if timed else None
    # None: the kernel would not tell, and the time cannot be checked.
    cpu = None if start is None or end is None else end - start
    try:
        reply = json.loads(bytes(buffer[:newline]))
    except ValueError:
        return {"outcome": "crash", "error": "sent a malformed reply"}, cpu
    if _type(reply) is not dict:
        return {"outcome": "crash", "error": "sent a malformed reply"}, cpu
    return reply, cpu


def _cpu_clock_at_rest(pid: int, patience_s: float = 0.5) -> float | None:
    """The worker's CPU clock, read once it sleeps (or after `patience_s`, if it never
    does: then the count may be up to a tick out of date)."""
    deadline = _perf_counter() + patience_s
    while _perf_counter() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                state = stat.read().rsplit(b")", 1)[-1].split()[0]
        except OSError:
            break
        if state != b"R":
            break
        time.sleep(0)
    return _cpu_clock(pid)


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
    slack = 0.001 + 0.2 * work + reply_bytes * 50e-9  # seconds
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
    findings: dict[str, None] = {}
    for args in payload["inputs"]:
        best = math.inf
        for r in range(repeat):
            reply, cpu = _worker(code, entry, args, max_reply)
            findings.update(dict.fromkeys(_findings(reply)))
            if reply.get("outcome") != "ok":
                error = _str(reply.get("error"))[:2000]
                return {"outcome": reply.get("outcome"), "error": error, "findings": [*findings]}
            reported = reply.get("time")
            if not _plausible(reported, cpu, idle_cpu, _len(json.dumps(reply))):
                # Once more before judging: a forged time is implausible every time, while
                # a load spike (page faults, preemption) adds a millisecond only now and then.
                reply, cpu = _worker(code, entry, args, max_reply)
                reported = reply.get("time") if reply.get("outcome") == "ok" else None
            if not _plausible(reported, cpu, idle_cpu, _len(json.dumps(reply))):
                return {
                    "outcome": "crash",
                    "error": f"reported a time ({reported!r} s) that the kernel's CPU "
                    f"accounting contradicts ({cpu or 0.0:.6f} s of CPU)",
                    "findings": [*findings],
                }
            best = min(best, reply["time"])
            if r == 0:
                outputs.append(reply.get("output"))
        times.append(_float(best))
    return {"outcome": "ok", "outputs": outputs, "times": times, "findings": [*findings]}


def _findings(reply: dict) -> list[str]:
    found = reply.pop("findings", [])
    return [_str(f)[:200] for f in found[:50]] if _type(found) is list else []


def solve_job(payload: dict, _chan: Any) -> dict:
    """Run `entry(*args)` once per input, each in a fresh worker with its own time limit,
    and report every input's outcome: a task's scorer counts what was solved."""
    try:
        code = _compile(payload["code"], "<candidate>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    entry, limit_s = payload["entry"], float(payload["per_call_s"])
    max_reply = int(payload.get("max_reply_bytes", 16 << 20))
    results = []
    findings: dict[str, None] = {}
    for args in payload["inputs"]:
        reply, _ = _worker(code, entry, args, max_reply, timed=False, limit_s=limit_s)
        reply.pop("time", None)
        findings.update(dict.fromkeys(_findings(reply)))
        if "error" in reply:
            reply["error"] = _str(reply["error"])[:500]
        results.append(reply)
    return {"outcome": "ok", "results": results, "findings": [*findings]}


def improve_job(payload: dict, chan: Any) -> dict:
    """Run an improver's `improve_algorithm` with proxies to the host's model and utility."""
    try:
        code = _compile(payload["improver"], "<improver>")
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    language_model = LanguageModelProxy(chan, **payload["language_model"])
    utility = UtilityProxy(chan, **payload["utility"])
    guard.install(_writable())
    reply = _improve(code, payload["initial_solution"], utility, language_model)
    reply["findings"] = list(guard.findings)
    return reply


def _improve(code: Any, initial_solution: str, utility: Any, language_model: Any) -> dict:
    try:
        namespace = {"__name__": "__improver__", "__builtins__": builtins}
        exec(code, namespace)
        fn = namespace.get("improve_algorithm")
        if not callable(fn):
            return {"outcome": "crash", "error": "the improver defines no improve_algorithm"}
        program = fn(initial_solution, utility, language_model)
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "crash", "error": _trimmed_traceback(exc)}
    if _type(program) is not str:
        return {
            "outcome": "crash",
            "error": f"improve_algorithm returned {_type(program).__name__}",
        }
    return {"outcome": "ok", "program": program}


JOBS = {"call": call_job, "solve": solve_job, "improve": improve_job}
