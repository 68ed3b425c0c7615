"""One call of untrusted code, in a worker forked from the sandbox's init, timed by the
kernel. This code is trusted; what the worker executes is not.

The worker holds no descriptor to the host, so it cannot speak for the sandbox. In a jail
it gets folders and an IPC namespace of its own, empty (nothing an earlier call wrote is
there), then gives up its capabilities. It may not start processes or threads, so all
its work shows in its own CPU time, which the kernel counts and the worker cannot forge:
that count, read by the init, is the time; nothing the worker says about time is asked
for. The guard's findings leave the worker as they happen, on a pipe of their own, so
erasing the guard's record afterwards erases nothing.

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
from dataclasses import dataclass, field
from typing import Any

from stop.sandbox import guard, jail, values
from stop.sandbox.confine import die_with_parent

_type, _len, _str = type, len, str
_perf_counter = time.perf_counter
_PLAIN = (int, float, str, bool, type(None))
_MAX_DEPTH = 20
_READY = b"R"
_MAX_FINDINGS_BYTES = 1 << 16
# Bound once: the init reads workers' CPU clocks every few milliseconds while they run.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


# CPU seconds a call may use when its job gives no limit of its own: the host's
# Limits.call_cpu_s, set by child.serve before the job runs (None: no limit).
default_limit_s: float | None = None


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


def trimmed_traceback(exc: BaseException, limit: int = 1500) -> str:
    text = "".join(traceback.format_exception_only(_type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f for f in frames if f.filename.startswith("<")]  # the untrusted code's frames
    if where:
        text = f"line {where[-1].lineno}: {text}"
    return text[-limit:]


def writable() -> tuple[str, ...]:
    """The folders the guard lets the job change: in a jail, all of its private ones."""
    return jail.SCRATCH if jail.inside else (os.getcwd(),)


@dataclass
class Call:
    reply: dict  # the worker's: outcome, and output or error (untrusted data)
    cpu_s: float | None  # CPU seconds the kernel charged it from start to reply
    findings: list[str] = field(default_factory=list)  # the guard's, as they happened


def run(
    code: Any,
    entry: str,
    args: list,
    max_reply: int,
    timed: bool = True,
    limit_s: float | None = None,
    tagged: bool = False,
    seed: int = 0,
) -> Call:
    """Fork a worker to run `entry(*args)` from `code` once; `limit_s`: CPU seconds.
    `tagged`: `args` is `[args, kwargs]` and the output comes back in the encoding of
    stop/sandbox/values.py (tuples and arrays kept), for an evaluator in another sandbox.
    `seed` seeds `random` and numpy's global generator in the worker. With no `limit_s`,
    the host's limit for calls applies, if it set one (`default_limit_s`)."""
    if limit_s is None:
        limit_s = default_limit_s
    r, w = os.pipe()
    control_r, control_w = os.pipe()
    found_r, found_w = os.pipe()
    os.set_blocking(found_w, False)  # a full pipe drops a finding, never hangs the worker
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker: untrusted code runs below
        try:
            _become_worker(parent, (r, control_w, found_r), (w, control_r, found_w), timed, seed)
            try:
                result = _call(code, entry, args, tagged)
            except BaseException as exc:  # noqa: BLE001 - SystemExit too is the program's fault
                result = {"outcome": "crash", "error": trimmed_traceback(exc)}
            data = json.dumps(result).encode() + b"\n"
            while data:
                data = data[os.write(w, data) :]
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os.read(control_r, 1)  # sleep until released
        except BaseException:  # noqa: BLE001 - the harness itself failed: say why
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(0)
    for fd in (w, control_r, found_w):
        os.close(fd)
    found = bytearray()
    try:
        reply, cpu = _collect(r, control_w, found_r, found, pid, max_reply, timed, limit_s)
    finally:
        os.close(control_w)  # releases the worker
        os.close(r)
    # Reaped before the next worker starts, so that no process but the init is left for
    # a candidate to signal or to count against its process limit.
    _, status, _ = os.wait4(pid, 0)
    _drain(found_r, found)
    os.close(found_r)
    if reply is None:
        why = f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else None
        reply = {"outcome": "crash", "error": why or "exited before returning"}
    lines = bytes(found).decode("utf-8", "replace").splitlines()
    return Call(reply, cpu, list(dict.fromkeys(line[:200] for line in lines if line))[:50])


def _set_apart(parent: int, keep: list[int]) -> None:
    """A fork of the init becomes a process of its own: only descriptors `keep` (and the
    standard streams), fresh folders, no capabilities."""
    die_with_parent(parent)  # if the host dies, the sandbox and all its workers go
    keep = sorted(keep)
    for low, high in zip([2, *keep], [*keep, 1 << 16], strict=True):
        os.closerange(low + 1, high)
    if jail.inside:
        jail.fresh_scratch()
        jail.lock()
    else:  # a weak sandbox: a fresh folder at least (its /tmp is the machine's)
        os.mkdir(f"call-{os.getpid()}", 0o700)
        os.chdir(f"call-{os.getpid()}")


def become_evaluator(parent: int, w: int) -> None:
    """An OpenEvolve-style evaluator's process (stop/sandbox/remote.py): the user's code,
    set apart like a worker, but with no guard and the sandbox's process limit, since
    evaluators start threads and subprocesses. The program it scores is not in it."""
    _set_apart(parent, [w])


def _become_worker(parent: int, theirs: tuple, mine: tuple, timed: bool, seed: int) -> None:
    for fd in theirs:
        os.close(fd)
    _set_apart(parent, list(mine))
    w, control_r, found_w = mine
    # One process for this uid (the sandbox's init) is already running, so no fork or
    # thread can start: every cycle spent lands in this process's CPU time.
    resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))
    _seed_random(seed)
    if timed:
        _prefault()
    write = os.write  # bound now: the candidate may rebind os.write, not this

    def report(text: str) -> None:
        try:
            write(found_w, text.encode("utf-8", "replace")[:200] + b"\n")
        except OSError:
            pass

    guard.install(writable(), report)
    os.write(w, _READY)
    os.read(control_r, 1)  # sleep while the init reads our CPU clock


def _call(code: Any, entry: str, args: list, tagged: bool = False) -> dict:
    """Runs in the worker: the only process that executes the candidate."""
    kwargs: dict = {}
    if tagged:  # decoded before the candidate's code runs and can change the decoder
        args, kwargs = values.decode(args[0]), values.decode(args[1])
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    exec(code, namespace)
    fn = namespace.get(entry)
    if not callable(fn):
        return {"outcome": "crash", "error": f"the program defines no function {entry!r}"}
    out = fn(*args, **kwargs)
    try:
        return {"outcome": "ok", "output": values.encode(out) if tagged else to_plain(out)}
    except (NotPlain, values.NotPlain) as exc:
        return {"outcome": "wrong_answer", "error": _str(exc)}


def _seed_random(seed: int) -> None:
    """The same program on the same input gives the same answer, every run."""
    random.seed(seed)
    numpy_random = sys.modules.get("numpy.random")  # loaded: jobs that use numpy preload it
    if numpy_random is not None:
        numpy_random.seed(seed)


_MADV_POPULATE_WRITE = 23  # Linux 5.14+


def _prefault() -> None:
    """Take the copy-on-write faults of a fresh fork now, not inside the measurement.

    Without this, a program's first writes to each inherited page cost about half a
    millisecond in all, more than a fast program's whole run.
    """
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                span, perms = line.split()[:2]
                if perms[1] == "w" and perms[3] == "p":
                    start, end = (int(x, 16) for x in span.split("-"))
                    _libc.madvise(start, end - start, _MADV_POPULATE_WRITE)
    except (OSError, AttributeError, ValueError):
        pass  # an older kernel: the measurement is just noisier


def _drain(fd: int, into: bytearray) -> None:
    """Whatever the worker's guard has reported so far, up to a bound."""
    os.set_blocking(fd, False)
    try:
        while _len(into) < _MAX_FINDINGS_BYTES and (chunk := os.read(fd, 1 << 14)):
            into += chunk
    except BlockingIOError:
        pass
    del into[_MAX_FINDINGS_BYTES:]


def _collect(
    r: int,
    control_w: int,
    found_r: int,
    found: bytearray,
    pid: int,
    max_reply: int,
    timed: bool,
    limit_s: float | None,
) -> tuple[dict | None, float | None]:
    """Start the worker, read its reply line (and its findings, as they come); return
    the reply with the CPU seconds the kernel charged the worker between the two."""
    if os.read(r, 1) != _READY:
        return None, None
    start = _cpu_clock_at_rest(pid) if timed or limit_s is not None else None
    os.write(control_w, b"g")
    # The limit is on CPU time, so a busy machine (or a sibling test) does not turn a
    # fast solution into a timeout; wall time gets a generous backstop, against a
    # program that sleeps. The backstop does not count the time the worker waited,
    # ready to run, for a CPU that others held: on 2 cores with a few sandboxes busy, a
    # 0.09 s program took 1.2 s of wall time, and a plain wall clock would have killed it.
    started = _perf_counter()
    backstop_s = math.inf if limit_s is None else 5 * limit_s + 1.0
    delay_at_start = _run_delay(pid)
    buffer = bytearray()
    scanned = 0  # bytes known to hold no newline: a huge reply stays linear to read
    while (newline := buffer.find(b"\n", scanned)) < 0:
        scanned = len(buffer)
        wait = None if limit_s is None else min(0.01, limit_s)
        ready = select.select([r, found_r], [], [], wait)[0]
        if found_r in ready:
            _drain(found_r, found)
        if r not in ready:
            if limit_s is not None:
                used = _cpu_clock(pid)
                over_cpu = start is not None and used is not None and used - start > limit_s
                # Past the backstop in plain wall time (cheap), then less the waiting.
                elapsed = _perf_counter() - started
                if elapsed > backstop_s:
                    elapsed -= _run_delay(pid) - delay_at_start
                if over_cpu or elapsed > backstop_s:
                    os.kill(pid, 9)
                    return _timeout(limit_s), None
            continue
        chunk = os.read(r, 1 << 16)
        if not chunk:
            return None, None
        if _len(buffer) + _len(chunk) > max_reply:
            os.kill(pid, 9)
            return {"outcome": "crash", "error": "the result is too large"}, None
        buffer += chunk
    end = _cpu_clock_at_rest(pid) if timed or limit_s is not None else None
    # None: the kernel would not tell.
    cpu = None if start is None or end is None else end - start
    if limit_s is not None and cpu is not None and cpu > limit_s:
        # The clock is read every 10 ms while the worker runs, and late when the machine
        # is busy (the init waits for a CPU too): a reply that arrives between two reads
        # is judged here, by the kernel's count, so the limit is the same under any load.
        return _timeout(limit_s), None
    try:
        reply = json.loads(bytes(buffer[:newline]))
    except ValueError:
        return {"outcome": "crash", "error": "sent a malformed reply"}, cpu
    if _type(reply) is not dict:
        return {"outcome": "crash", "error": "sent a malformed reply"}, cpu
    return reply, cpu


def _timeout(limit_s: float) -> dict:
    return {"outcome": "timeout", "error": f"took longer than {limit_s:g} s"}


def _run_delay(pid: int) -> float:
    """Seconds process `pid` has spent runnable but waiting for a CPU (schedstat's
    run_delay); 0.0 where the kernel does not say, which makes the backstop plain wall
    time."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as stat:
            return int(stat.read().split()[1]) * 1e-9
    except (OSError, ValueError, IndexError):
        return 0.0


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _cpu_clock(pid: int) -> float | None:
    """CPU seconds process `pid` has used so far (clock_getcpuclockid), or None."""
    try:
        clock, now = ctypes.c_int(), _Timespec()
        if _libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
            return None
        if _libc.clock_gettime(clock, ctypes.byref(now)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return now.tv_sec + now.tv_nsec * 1e-9


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
