"""Host side of the warm sandbox pool: one zygote process (zygote.py) per host process,
started on first use, that forks sandbox children in about a millisecond instead of the
tens of milliseconds a fresh interpreter takes to start and import.

A pooled child is not the host's child: the zygote reports its pid and, once reaped,
its exit status. `PooledChild` gives the runner the part of `subprocess.Popen` it uses.
If the zygote dies (the OOM killer, for instance), the children in flight are reported
as crashed and the next request starts a new zygote.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from stop.errors import SandboxError

log = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_START_TIMEOUT_S = 60.0  # numpy's import on a loaded 2-core machine takes seconds


class PooledChild:
    """A child forked by the zygote: pid, wait, poll and kill, as Popen has them."""

    def __init__(self, pid: int, zygote: Zygote) -> None:
        self.pid = pid
        self._zygote = zygote
        self.returncode: int | None = None
        self._done = threading.Event()

    def _exited(self, returncode: int) -> None:
        self.returncode = returncode
        self._done.set()

    def poll(self) -> int | None:
        if self.returncode is None and not self._zygote.alive:
            return -signal.SIGKILL  # it died with its parent, or is about to
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(f"sandbox child {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Zygote:
    """One warm parent process and the thread that reads its messages."""

    def __init__(self, env: dict[str, str], numpy: bool) -> None:
        host, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        bootstrap = (
            f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
            "from stop.sandbox.zygote import main; main()"
        )
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-c", bootstrap, str(theirs.fileno()), _KINDS[numpy]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=env,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox pool: {exc}") from exc
        finally:
            theirs.close()
        self.sock = host
        self.sock.settimeout(_START_TIMEOUT_S)
        try:
            ready = json.loads(self.sock.recv(1 << 16) or b"{}")
        except (OSError, ValueError) as exc:
            self.proc.kill()
            raise SandboxError(f"the sandbox pool did not start: {exc}") from exc
        if "ready" not in ready:
            self.proc.kill()
            raise SandboxError("the sandbox pool did not start")
        self.pid = self.proc.pid
        self.sock.settimeout(None)
        self.alive = True
        self._ids = itertools.count()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()  # guards the two tables below
        self._spawned: dict[int, list] = {}  # request id -> [event, its PooledChild]
        self._children: dict[int, PooledChild] = {}
        self._early: dict[int, int] = {}  # exits reported before the spawn reply was read
        threading.Thread(target=self._read, name="sandbox-pool", daemon=True).start()

    def spawn(
        self, fds: tuple[int, int, int, int], setup: dict, env: dict[str, str]
    ) -> PooledChild:
        request_id = next(self._ids)
        waiter: list = [threading.Event(), None, None]  # done, its PooledChild, or an error
        with self._lock:
            self._spawned[request_id] = waiter
        message = json.dumps({"id": request_id, "setup": setup, "env": env}).encode()
        try:
            with self._send_lock:
                socket.send_fds(self.sock, [message], list(fds))
        except OSError as exc:
            self.alive = False
            raise SandboxError(f"the sandbox pool is gone: {exc}") from exc
        if not waiter[0].wait(_START_TIMEOUT_S) or waiter[1] is None:
            why = f": {waiter[2]}" if waiter[2] else ""
            raise SandboxError(f"the sandbox pool did not start a child{why}")
        return waiter[1]

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            with self._lock:
                if "pid" in message:
                    child = PooledChild(message["pid"], self)
                    if message["pid"] in self._early:
                        child._exited(self._early.pop(message["pid"]))
                    else:
                        self._children[child.pid] = child
                    waiter = self._spawned.pop(message["id"])
                    waiter[1] = child
                    waiter[0].set()
                elif "error" in message:  # the fork failed; the warm parent lives on
                    waiter = self._spawned.pop(message["id"])
                    waiter[2] = str(message["error"])[:300]
                    waiter[0].set()
                elif "exited" in message:
                    found = self._children.pop(message["exited"], None)
                    if found is None:
                        self._early[message["exited"]] = message["returncode"]
                    else:
                        found._exited(message["returncode"])
        # The zygote is gone, and its children with it (they die with their parent).
        if self.alive:
            log.warning("sandbox pool: the warm parent exited; the next sandbox starts a new one")
        self.alive = False
        with self._lock:
            for child in self._children.values():
                child._exited(-signal.SIGKILL)
            for waiter in self._spawned.values():
                waiter[0].set()
            self._children.clear()
            self._spawned.clear()

    def close(self) -> None:
        self.alive = False
        try:
            self.sock.close()
        finally:
            self.proc.kill()
            self.proc.wait()


_KINDS = {False: "plain", True: "numpy"}
_zygotes: dict[bool, Zygote] = {}  # by whether its children have numpy loaded
_zygote_lock = threading.Lock()


def fork_child(
    numpy: bool, fds: tuple[int, int, int, int], setup: dict, env: dict[str, str]
) -> tuple[PooledChild, int]:
    """Fork a sandbox child from the warm parent of its kind (started, or restarted after
    it died); the child and the pid of its parent, to which its death signal is tied.
    Raises SandboxError if the warm parent fails."""
    with _zygote_lock:
        zygote = _zygotes.get(numpy)
        if zygote is None or not zygote.alive:
            if zygote is not None:
                zygote.close()
            zygote = _zygotes[numpy] = Zygote(_zygote_env(), numpy)
    return zygote.spawn(fds, setup, env), zygote.pid


def _zygote_env() -> dict[str, str]:
    from stop.sandbox.slots import child_env

    return child_env(None)


def _forget_in_child() -> None:
    """A forked copy of the host must not share the host's warm parents: it starts its
    own, and lets go of the host's sockets (or they would keep the parents alive)."""
    global _zygote_lock
    _zygote_lock = threading.Lock()  # another thread may have held it at the fork
    for zygote in _zygotes.values():
        zygote.sock.close()
    _zygotes.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def shutdown() -> None:
    """Stop the warm parents (and so their children). Call slots.shutdown() instead."""
    with _zygote_lock:
        for zygote in _zygotes.values():
            zygote.close()
        _zygotes.clear()
