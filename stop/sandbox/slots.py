"""What one sandbox needs before its job is known, made fresh or kept ready by the pool.

A slot is a child process that has started and isolated itself (its own session and
network and IPC namespaces) and now waits for its one job on a pipe, with the user id,
the working directory and the output files that belong to it. The job brings the rest of
the confinement (limits, then the switch to the slot's user id) before any of its code
runs, so a slot made ahead of time is confined exactly as one made on demand.

With the warm pool (pool.py), one spare slot per kind of child is kept ready: taking it
starts the next in the background, so that a job waits neither for an interpreter nor
for a fork and namespace set-up.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stop.errors import SandboxError
from stop.sandbox import pool, reaper

log = logging.getLogger(__name__)

# Only these variables reach the child; everything else (API keys, tokens, proxies,
# cloud credentials) stays with the host.
_ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def child_env(workdir: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_ALLOW if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.update(HOME=workdir, TMPDIR=workdir, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    # Numeric libraries must not start thread pools: a timed worker may not start threads.
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


@dataclass
class Slot:
    uid: int | None  # the child's user id once confined; None when we are not root
    workdir: str  # the child's fresh directory
    private: Path  # host-only: the child's stdout and stderr files
    proc: subprocess.Popen[bytes] | pool.PooledChild
    parent_pid: int  # the process the child's death signal is tied to
    to_child: int  # the host's ends of the two pipes
    from_child: int


def make(pooled: bool, numpy: bool) -> Slot:
    """A new slot: a child forked from the warm pool, or a fresh interpreter."""
    root = os.geteuid() == 0
    uid = reaper.next_uid() if root else None
    private = Path(tempfile.mkdtemp(prefix="stop-host-"))
    workdir = tempfile.mkdtemp(prefix="stop-sbx-")
    if uid is not None:
        os.chown(workdir, uid, uid)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    try:
        with open(private / "stdout", "wb") as out, open(private / "stderr", "wb") as err:
            if pooled:
                fds = (to_child_r, from_child_w, out.fileno(), err.fileno())
                proc, parent = pool.fork_child(numpy, fds, workdir, child_env(workdir))
            else:
                proc, parent = _start_fresh(workdir, out, err, to_child_r, from_child_w)
    except BaseException:
        for fd in (to_child_w, from_child_r):
            os.close(fd)
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        # The child's ends are its own now (or nobody's).
        os.close(to_child_r)
        os.close(from_child_w)
    return Slot(uid, workdir, private, proc, parent, to_child_w, from_child_r)


def _start_fresh(
    workdir: str, out, err, to_child_r: int, from_child_w: int
) -> tuple[subprocess.Popen[bytes], int]:
    bootstrap = (
        f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
        "from stop.sandbox.child import main; main()"
    )
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", bootstrap, str(to_child_r), str(from_child_w)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=(to_child_r, from_child_w),
            cwd=workdir,
            env=child_env(workdir),
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start sandbox child: {exc}") from exc
    return proc, os.getpid()


def release(slot: Slot) -> None:
    """Kill the slot's process group now; reap it, kill the rest of what runs under its
    user id and remove what it left just after, on the sweeper thread (`settle` waits).
    The uid is never handed out again meanwhile, and the child's session, which holds
    all it started unless it escaped with setsid, is gone before this returns."""
    if slot.proc.poll() is None:
        reaper.kill_group(slot.proc.pid)
        slot.proc.kill()
    global _sweeper
    with _sweeper_lock:
        if _sweeper is None:
            _sweeper = threading.Thread(target=_sweep_forever, name="sandbox-sweeper", daemon=True)
            _sweeper.start()
    _to_sweep.put(slot)


def settle() -> None:
    """Wait until every released slot is swept."""
    _to_sweep.join()


def _sweep_forever() -> None:
    while True:
        slot = _to_sweep.get()
        try:
            _sweep(slot)
        except Exception:  # noqa: BLE001 - one failed sweep must not stop the next
            log.exception("sandbox: cleaning up after a sandbox failed")
        finally:
            _to_sweep.task_done()


def _sweep(slot: Slot) -> None:
    slot.proc.wait()  # killed in `release`; reaped (or reported by its warm parent) here
    reaper.kill_group(slot.proc.pid)
    if slot.uid is not None:
        reaper.kill_uid(slot.uid)
        reaper.remove_leftovers(slot.uid)
    for fd in (slot.to_child, slot.from_child):
        os.close(fd)
    shutil.rmtree(slot.private, ignore_errors=True)
    shutil.rmtree(slot.workdir, ignore_errors=True)


_to_sweep: queue.Queue[Slot] = queue.Queue()
_sweeper: threading.Thread | None = None
_sweeper_lock = threading.Lock()

SPARES = 1  # per kind of child: a sequence of jobs never waits; parallel ones may
_spares: dict[bool, list[Slot]] = {False: [], True: []}
_making: dict[bool, int] = {False: 0, True: 0}
_lock = threading.Lock()


def take(numpy: bool) -> Slot:
    """A pooled slot: the spare if one is ready and alive, else a new one; either way the
    next spare starts in the background. Raises SandboxError if the pool has failed."""
    spare = None
    with _lock:
        while _spares[numpy] and spare is None:
            spare = _spares[numpy].pop()
            if spare.proc.poll() is not None:  # its warm parent died under it
                release(spare)
                spare = None
        if _making[numpy] + len(_spares[numpy]) < SPARES:
            _making[numpy] += 1
            threading.Thread(target=_make_spare, args=(numpy,), daemon=True).start()
    return spare or make(True, numpy)


def _make_spare(numpy: bool) -> None:
    try:
        spare = make(True, numpy)
    except SandboxError as exc:
        log.debug("sandbox pool: no spare: %s", exc)
        spare = None
    with _lock:
        _making[numpy] -= 1
        if spare is not None:
            _spares[numpy].append(spare)


def _forget_in_child() -> None:
    """A forked copy of the host leaves the host's spares (and its sweeps) to the host."""
    global _sweeper, _to_sweep, _lock, _sweeper_lock
    _lock, _sweeper_lock = threading.Lock(), threading.Lock()  # a thread may have held them
    for spare in _spares[False] + _spares[True]:
        for fd in (spare.to_child, spare.from_child):
            os.close(fd)
    _spares[False].clear()
    _spares[True].clear()
    _making.update({False: 0, True: 0})
    _sweeper, _to_sweep = None, queue.Queue()


os.register_at_fork(after_in_child=_forget_in_child)


@atexit.register
def shutdown() -> None:
    """Discard the spare slots and stop the warm parents (at exit; tests use it too)."""
    discard_spares()
    settle()
    pool.shutdown()


def discard_spares() -> None:
    for _ in range(200):  # a spare still being made would leave its folders behind
        with _lock:
            if not any(_making.values()):
                break
        time.sleep(0.01)
    with _lock:
        spares = _spares[False] + _spares[True]
        _spares[False].clear()
        _spares[True].clear()
    for spare in spares:
        release(spare)
