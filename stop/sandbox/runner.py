"""Host side of the sandbox: start a child, talk to it over pipes, kill all it started.

The child (stop/sandbox/child.py) builds its jail (stop/sandbox/jail.py: user, mount,
PID, network and IPC namespaces, a filesystem of its own) and confines itself before it
runs any untrusted code: resource limits, no capabilities, no_new_privs, and when we
are root a user id of its own. The host owns the wall clock: at the deadline it kills
the jail's init, and with it every process in the jail.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput, Interrupted, SandboxError
from stop.sandbox import jail, pool, reaper, slots

log = logging.getLogger(__name__)


# The warm pool (pool.py) unless STOP_SANDBOX_POOL=0: the same confinement, without an
# interpreter start per sandbox.
POOL = os.environ.get("STOP_SANDBOX_POOL", "1") != "0"

Rpc = Callable[[dict[str, Any]], dict[str, Any]]
SandboxStatus = Literal["ok", "timeout", "crash"]
_MAX_FINDINGS = 50


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    wall_s: float = 10.0  # seconds of wall clock, counted by the host
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


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        sig = signal.Signals(-code)
        why = {
            signal.SIGXFSZ: "file-size limit (output too large)",
            signal.SIGXCPU: "CPU-time limit",
            signal.SIGSEGV: "segmentation fault",
            signal.SIGKILL: "killed (memory or process limit, or from outside)",
        }.get(sig, "")
        return f"killed by {sig.name}" + (f": {why}" if why else "")
    return f"exited with status {code} before replying"


class _Channel:
    """Newline-delimited JSON over two pipes, with a deadline on every read and write."""

    def __init__(self, rfd: int, wfd: int, deadline: float, max_bytes: int) -> None:
        self.rfd, self.wfd, self.deadline, self.max_bytes = rfd, wfd, deadline, max_bytes
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)

    def send(self, message: dict[str, Any]) -> bool:
        data = (json.dumps(message) + "\n").encode()
        while data:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return False
            _, w, _ = select.select([], [self.wfd], [], left)
            if w:
                try:
                    data = data[os.write(self.wfd, data) :]
                except BrokenPipeError:
                    return False
        return True

    def recv(self) -> dict[str, Any] | str:
        """The next message, or "eof", "timeout" or "oversized"."""
        while (end := self._buf.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buf)  # search only new bytes: a huge line stays linear
            left = self.deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            r, _, _ = select.select([self.rfd], [], [], left)
            if not r:
                continue
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                return "eof"
            if len(self._buf) + len(chunk) > self.max_bytes:
                return "oversized"
            self._buf += chunk
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        self._scanned = 0
        try:
            message = json.loads(line)
        except ValueError:
            return "oversized"
        return message if isinstance(message, dict) else "oversized"


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

    Raises JailError if no jail can be built here (and the weak sandbox was not asked
    for): that is never scored as the candidate's failure.
    """
    use_pool = POOL if use_pool is None else use_pool
    if jail.weak():
        _warn_once("weak sandbox (--weak-sandbox): no jail; sandboxed code can read your files")
    missing = [path for path in read_paths if not os.path.exists(path)]
    if missing:
        raise BadInput(f"cannot show {missing[0]} to the sandbox: no such file or folder")
    numpy = any(name.split(".")[0] == "numpy" for name in preload)
    kind_of_slot = slots.Kind(numpy, tuple(os.path.realpath(p) for p in read_paths))
    try:
        slot = slots.take(kind_of_slot) if use_pool else slots.make(False, kind_of_slot)
    except SandboxError as exc:
        if not use_pool or isinstance(exc, jail.JailError):
            raise
        # Scored as a failed evaluation; the next sandbox starts a new pool.
        log.warning("sandbox: %s", exc)
        return SandboxResult(status="crash", error=str(exc), wall_s=0.0)
    start = time.monotonic()
    with _live_lock:
        if _stopping:
            slots.release(slot)
            raise Interrupted("the run is being interrupted: no new sandbox starts")
        _live[id(slot)] = slot
    try:
        return _run(slot, kind, payload, limits, rpc, preload, guard, start)
    finally:
        with _live_lock:
            _live.pop(id(slot), None)
        slots.release(slot)


# The sandboxes running now, so that Ctrl-C can end them at once: a thread waiting on one
# (a meta-utility test) would otherwise hold the interrupted run until its deadline.
_live: dict[int, slots.Slot] = {}  # by id: slots are not hashable
_live_lock = threading.Lock()
_stopping = False


def stop_all() -> None:
    """Kill every running sandbox and start no new one (the process is being interrupted)."""
    global _stopping
    with _live_lock:
        _stopping = True
        running = list(_live.values())
    for slot in running:
        slot.kill_jail()
        reaper.kill_group(slot.proc.pid)


def _run(
    slot: slots.Slot,
    kind: str,
    payload: dict[str, Any],
    limits: Limits,
    rpc: Rpc | None,
    preload: tuple[str, ...],
    guard: bool,
    start: float,
) -> SandboxResult:
    proc = slot.proc
    chan = _Channel(slot.from_child, slot.to_child, start + limits.wall_s, limits.message_mb << 20)
    job = {
        "kind": kind,
        "payload": payload,
        "preload": list(preload),
        "guard": guard,
        "confine": {
            "uid": slot.uid,
            "workdir": slot.workdir,
            "host_pid": slot.parent_pid,
            **limits.model_dump(),
        },
    }
    findings: list[str] = []
    status, value, error, isolation = _converse(chan, job, rpc, slot, findings)
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
            proc.wait(timeout=max(0.0, min(2.0, start + limits.wall_s - time.monotonic())))
        except subprocess.TimeoutExpired:
            status, error = "timeout", None
    if status == "timeout":
        error = f"timed out after {limits.wall_s:g} s; killed"
    slot.kill_jail()
    reaper.kill_group(proc.pid)
    returncode = proc.wait() if waits else proc.poll()
    if status == "ok" and returncode not in (0, None):
        status, error = "crash", _describe_exit(returncode)
    if status == "crash" and error is None:
        error = _describe_exit(returncode)
    return SandboxResult(
        status=status,
        value=value,
        error=error,
        stdout=_tail(slot.private / "stdout", limits.tail_chars),
        stderr=_tail(slot.private / "stderr", limits.tail_chars),
        wall_s=time.monotonic() - start,
        returncode=returncode,
        isolation=isolation,
        findings=findings,
    )


def _converse(
    chan: _Channel, job: dict[str, Any], rpc: Rpc | None, slot: slots.Slot, findings: list[str]
) -> tuple[SandboxStatus, Any, str | None, list[str]]:
    """Send the job, answer requests, note findings, and return (status, value, error,
    isolation). Raises JailError if the child says, first, that it could not build its
    jail."""
    if not chan.send(job):
        return "crash", None, None, []
    isolation: list[str] = []
    first = True
    while True:
        message = chan.recv()
        if message == "timeout":
            return "timeout", None, None, isolation
        if message == "eof":
            return "crash", None, None, isolation
        if message == "oversized" or not isinstance(message, dict):
            return "crash", None, "sent a malformed or oversized message", isolation
        kind = message.get("type")
        if kind == "jail_failed" and first:
            raise jail.JailError(str(message.get("error"))[:500])
        if kind == "confined" and first:
            # Only the trusted start-up code sends this, and only as its first message.
            isolation = [str(x) for x in message.get("isolation", [])][:12]
            slot.jailed(message.get("pid"))
            first = False
            continue
        first = False
        if kind == "confined":
            return "crash", None, "sent a second isolation report", isolation
        elif kind == "finding":  # untrusted, like all but the first message: bounded
            text = str(message.get("text"))[:200]
            if len(findings) < _MAX_FINDINGS and text not in findings:
                findings.append(text)
        elif kind == "rpc" and rpc is not None:
            body = message.get("body")
            reply = rpc(body) if isinstance(body, dict) else {"error": "malformed request"}
            if not chan.send(reply):
                return "timeout" if time.monotonic() >= chan.deadline else "crash", None, None, []
        elif kind == "result":
            return "ok", message.get("body"), None, isolation
        else:
            return "crash", None, f"sent an unexpected message type {kind!r}", isolation
