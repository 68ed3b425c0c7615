"""Host side of the sandbox: start a child, talk to it over pipes, kill all it started.

The child (stop/sandbox/child.py) builds its jail (stop/sandbox/jail.py: user, mount,
PID, network and IPC namespaces, a filesystem of its own) and confines itself before it
runs any untrusted code: resource limits, no capabilities, no_new_privs, and when we
are root a user id of its own. The host owns the wall clock: at the deadline it kills
the jail's init, and with it every process in the jail.

The job's clock starts once the child is confined: the trusted start-up before it
slows down on a busy machine too, and is not the job's time. A child that dies before
then ran none of the job's code, so the host tries once more in a fresh sandbox.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput, Interrupted, SandboxError
from stop.sandbox import jail, pool, reaper, slots
from stop.sandbox.channel import Channel

log = logging.getLogger(__name__)


# The warm pool (pool.py) unless STOP_SANDBOX_POOL=0: the same confinement, without an
# interpreter start per sandbox.
POOL = os.environ.get("STOP_SANDBOX_POOL", "1") != "0"

Rpc = Callable[[dict[str, Any]], dict[str, Any]]
SandboxStatus = Literal["ok", "timeout", "crash"]
_MAX_FINDINGS = 50
# Seconds the trusted start-up may take before the job's clock starts: a spare's jail
# is built in moments, a fresh interpreter with numpy on a loaded 2-core machine takes
# seconds (pool.py waits as long for a warm parent). Only a hung start-up reaches it.
START_UP_S = 60.0
_STDERR_LINE_CHARS = 300  # of the last line of a dead child's stderr, in its error


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_s: float = 10.0  # seconds of wall clock for the job, counted by the host
    # CPU seconds one call of untrusted code may use in its worker (worker.py), counted by
    # the kernel, which a busy machine does not inflate; None: only the job's own limits
    # (a solve job sets its own per call). The call job (the speed utility) uses it.
    call_cpu_s: float | None = None
    memory_mb: int = 1024  # address space
    file_mb: int = 16  # largest file the child may write (stdout and stderr included)
    open_files: int = 64
    processes: int = 32  # threads count too
    tail_chars: int = 4000  # how much of stdout/stderr is kept
    message_mb: int = 32  # largest message the child may send


class SandboxResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: SandboxStatus
    value: Any = None  # the child's reply: JSON from untrusted code, validate before use
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float
    returncode: int | None = None  # None: a pooled child that replied, not waited for
    isolation: list[str] = []
    findings: list[str] = []  # the guard's, each sent on its own as it happened


@functools.cache
def _warn_once(message: str) -> None:
    log.warning("sandbox: %s", message)


def _tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text[-chars:]


def _describe_exit(code: int | None, stderr: str = "", replied: bool = False) -> str:
    """Why a child ended: its signal or exit status, and the last line of its stderr (a
    traceback's last line names the error: a MemoryError, an ImportError at start-up)."""
    if code is None:
        why = "no exit status"
    elif code < 0:
        try:
            sig = signal.Signals(-code)
        except ValueError:  # not a signal this Python knows by name
            return f"killed by signal {-code}"
        cause = {
            signal.SIGXFSZ: "file-size limit (output too large)",
            signal.SIGXCPU: "CPU-time limit",
            signal.SIGSEGV: "segmentation fault",
            signal.SIGKILL: "killed (memory or process limit, or from outside)",
        }.get(sig, "")
        why = f"killed by {sig.name}" + (f": {cause}" if cause else "")
    else:
        why = f"exited with status {code} {'after' if replied else 'before'} replying"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"{why}; stderr: {lines[-1][-_STDERR_LINE_CHARS:]}" if lines else why


def run_job(
    kind: str,
    payload: dict[str, Any],
    limits: Limits,
    *,
    rpc: Rpc | None = None,
    preload: tuple[str, ...] = (),
    guard: bool = True,
    use_pool: bool | None = None,
    read_paths: tuple[str, ...] = (),
) -> SandboxResult:
    """Run job `kind` (see stop/sandbox/jobs.py) in a fresh confined child.

    `rpc` answers the child's requests (the improver's language-model and utility calls);
    `preload` names modules the child imports before the job's code runs (so that their
    import is not timed; anything installed imports inside as well);
    `guard=False` leaves out the audit-hook guard (to test the walls beneath it);
    `use_pool` forks the child from the warm pool (default: `POOL`) instead of starting
    a new interpreter; `read_paths` are host files or folders the job may read (as
    root, the sandbox's private uid reads them as any other user would).

    A sandbox that fails before its job starts is replaced once (below). Raises JailError
    if no jail can be built here (and the weak sandbox was not asked for): that is never
    scored as the candidate's failure.
    """
    use_pool = POOL if use_pool is None else use_pool
    if jail.weak():
        _warn_once("weak sandbox (--weak-sandbox): no jail; sandboxed code can read your files")
    missing = [path for path in read_paths if not os.path.exists(path)]
    if missing:
        raise BadInput(f"cannot show {missing[0]} to the sandbox: no such file or folder")
    numpy = any(name.split(".")[0] == "numpy" for name in preload)
    kind_of_slot = slots.Kind(numpy, tuple(os.path.realpath(p) for p in read_paths))
    job = _Job(kind, payload, limits, rpc, preload, guard)
    result, started = _attempt(job, kind_of_slot, use_pool)
    if started:
        return result
    # The child died (or never came) before it said it was confined: it ran only trusted
    # start-up code, none of the job's, so the failure is the sandbox's (a fork refused
    # on a loaded machine, the warm parent killed, a start-up import that ran out of
    # memory) and never the candidate's score. Once more, in a fresh sandbox; a second
    # failure is reported, since a start-up that fails twice will most likely fail again.
    log.warning("sandbox: %s before its job started; trying once more", result.error)
    again, started = _attempt(job, kind_of_slot, use_pool)
    if not started:
        again = again.model_copy(
            update={"error": f"{again.error} (the sandbox failed twice before its job started)"}
        )
    return again


class _Job(NamedTuple):
    kind: str
    payload: dict[str, Any]
    limits: Limits
    rpc: Rpc | None
    preload: tuple[str, ...]
    guard: bool


def _attempt(job: _Job, kind_of_slot: slots.Kind, use_pool: bool) -> tuple[SandboxResult, bool]:
    """One sandbox for `job`: its result, and whether the job started in it (the child
    said it was confined: from then on the job's own code may have run)."""
    try:
        slot = slots.take(kind_of_slot) if use_pool else slots.make(False, kind_of_slot)
    except SandboxError as exc:
        if not use_pool or isinstance(exc, jail.JailError):
            raise
        # Scored as a failed evaluation; the next sandbox starts a new pool.
        log.warning("sandbox: %s", exc)
        return SandboxResult(status="crash", error=str(exc), wall_s=0.0), False
    start = time.monotonic()
    group: Group | None = getattr(_current, "group", None)
    with _live_lock:
        if _stopping or (group is not None and group.killed):
            slots.release(slot)
            raise Interrupted("the run is being interrupted: no new sandbox starts")
        _live[id(slot)] = slot
        if group is not None:
            group.live[id(slot)] = slot
    try:
        return _run(slot, job, start)
    finally:
        with _live_lock:
            _live.pop(id(slot), None)
            if group is not None:
                group.live.pop(id(slot), None)
        slots.release(slot)


# The sandboxes running now, so that Ctrl-C can end them at once: a thread waiting on one
# (a meta-utility test) would otherwise hold the interrupted run until its deadline.
_live: dict[int, slots.Slot] = {}  # by id: slots are not hashable
_live_lock = threading.Lock()
_stopping = False


class Group:
    """The sandboxes that threads start while they work for the group (`with group:`),
    to be killed together: the evaluations an improver never took, once it returns."""

    def __init__(self) -> None:
        self.live: dict[int, slots.Slot] = {}
        self.killed = False

    def __enter__(self) -> Group:
        _current.group = self
        return self

    def __exit__(self, *exc: object) -> None:
        _current.group = None

    def kill(self) -> None:
        """Kill the group's running sandboxes; none of its threads starts another."""
        with _live_lock:
            self.killed = True
            running = list(self.live.values())
        for slot in running:
            slot.kill_jail()
            reaper.kill_group(slot.proc.pid)


_current = threading.local()


def stop_all() -> None:
    """Kill every running sandbox and start no new one (the process is being interrupted)."""
    global _stopping
    with _live_lock:
        _stopping = True
        running = list(_live.values())
    for slot in running:
        slot.kill_jail()
        reaper.kill_group(slot.proc.pid)


def _run(slot: slots.Slot, job: _Job, start: float) -> tuple[SandboxResult, bool]:
    proc, limits = slot.proc, job.limits
    # Until the child is confined, the deadline is the start-up's; `_converse` moves it to
    # the job's own once the child says so.
    chan = Channel(slot.from_child, slot.to_child, start + START_UP_S, limits.message_mb << 20)
    message = {
        "kind": job.kind,
        "payload": job.payload,
        "preload": list(job.preload),
        "guard": job.guard,
        "confine": {
            "uid": slot.uid,
            "workdir": slot.workdir,
            "host_pid": slot.parent_pid,
            **limits.model_dump(),
        },
    }
    findings: list[str] = []
    talk = _converse(chan, message, job.rpc, slot, findings, limits.wall_s)
    status, value, error, isolation = talk.status, talk.value, talk.error, talk.isolation
    if isolation and "netns" not in isolation:
        _warn_once("no network namespace available: sandboxed code can use the network")
    # A pooled child ends with os._exit right after its result, its output flushed before
    # it: nothing of its job can run, fail or hang after the result, so the host takes
    # it and moves on (returncode None: not waited for; the sweep reaps it). A fresh
    # interpreter still shuts down after the result (threads, exit handlers): it is
    # given a moment to exit on its own, and its status is checked.
    waits = status != "ok" or not isinstance(proc, pool.PooledChild)
    # The channel closed without a result: the jail's init has ended, and its keeper
    # follows it within moments; its exit status says why.
    if (status == "ok" and waits) or (status == "crash" and error is None):
        try:
            proc.wait(timeout=max(0.0, min(2.0, chan.deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            status, error = "timeout", None
    if status == "timeout" and not talk.started:
        # The start-up hung past START_UP_S: the sandbox's failure, tried again.
        status, error = "crash", f"the sandbox did not start within {START_UP_S:g} s"
    elif status == "timeout":
        error = f"timed out after {limits.wall_s:g} s; killed"
    slot.kill_jail()
    reaper.kill_group(proc.pid)
    returncode = proc.wait() if waits else proc.poll()
    stderr = _tail(slot.private / "stderr", limits.tail_chars)
    if status == "ok" and returncode not in (0, None):
        status, error = "crash", _describe_exit(returncode, stderr, replied=True)
    if status == "crash" and error is None:
        error = _describe_exit(returncode, stderr)
    result = SandboxResult(
        status=status,
        value=value,
        error=error,
        stdout=_tail(slot.private / "stdout", limits.tail_chars),
        stderr=stderr,
        wall_s=time.monotonic() - start,
        returncode=returncode,
        isolation=isolation,
        findings=findings,
    )
    return result, talk.started


class _Talk(NamedTuple):
    status: SandboxStatus
    value: Any = None
    error: str | None = None
    isolation: list[str] = []
    # Whether the child said anything (see `_converse`): a malformed first message counts
    # too, since where the host cannot tell, the job may have started.
    started: bool = False


def _converse(
    chan: Channel,
    job: dict[str, Any],
    rpc: Rpc | None,
    slot: slots.Slot,
    findings: list[str],
    wall_s: float,
) -> _Talk:
    """Send the job, answer requests, note findings, and say how it went; `wall_s`
    counts from the child's "confined". Raises JailError if the child says, first, that
    it could not build its jail.

    What "started" means: the child reads the job (child.serve, `job = chan.recv()`,
    where a spare waits), imports the preloads the host named, confines itself, sends
    "confined" as its first message, and only then runs the job, whose code (candidate,
    improver) is in the payload. A failed send here (the child died before reading) and
    a death before "confined" both come before any of that code could run."""
    if not chan.send(job):
        return _Talk("crash")
    isolation: list[str] = []
    started = False
    while True:
        message = chan.recv()
        if message == "timeout":
            return _Talk("timeout", isolation=isolation, started=started)
        if message == "eof":
            return _Talk("crash", isolation=isolation, started=started)
        first, started = not started, True
        if message == "oversized" or not isinstance(message, dict):
            error = "sent a malformed or oversized message"
            return _Talk("crash", None, error, isolation, started)
        kind = message.get("type")
        if kind == "jail_failed" and first:
            raise jail.JailError(str(message.get("error"))[:500])
        if kind == "confined" and first:
            # Only the trusted start-up code sends this, and only as its first message.
            isolation = [str(x) for x in message.get("isolation", [])][:12]
            slot.jailed(message.get("pid"))
            chan.deadline = time.monotonic() + wall_s  # the job's clock starts now
            continue
        if kind == "confined":
            return _Talk("crash", None, "sent a second isolation report", isolation, started)
        elif kind == "finding":  # untrusted, like all but the first message: bounded
            text = str(message.get("text"))[:200]
            if len(findings) < _MAX_FINDINGS and text not in findings:
                findings.append(text)
        elif kind == "rpc" and rpc is not None:
            body = message.get("body")
            reply = rpc(body) if isinstance(body, dict) else {"error": "malformed request"}
            if not chan.send(reply):
                status: SandboxStatus = "timeout" if time.monotonic() >= chan.deadline else "crash"
                return _Talk(status, started=started)
        elif kind == "result":
            return _Talk("ok", message.get("body"), None, isolation, started)
        else:
            error = f"sent an unexpected message type {kind!r}"
            return _Talk("crash", None, error, isolation, started)
