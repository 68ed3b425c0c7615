"""What one sandbox needs before its job is known, made fresh or kept ready by the pool.

A slot is a child process that has started and built its jail (jail.py: namespaces, a
filesystem of its own) and now waits for its one job on a pipe, with the user id, the
stage folder the jail is built on and the output files that belong to it. The job brings
the rest of the confinement (limits, no capabilities, no_new_privs) before any of its code
runs, so a slot made ahead of time is confined exactly as one made on demand. What a
slot is made for (its `Kind`: numpy preloaded or not, the paths its job may read) is
known before the job, so spares are kept per kind.

With the warm pool (pool.py), one spare slot per kind of child is kept ready: taking it
starts the next in the background, so that a job waits neither for an interpreter nor
for a fork and namespace set-up.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stop.errors import SandboxError
from stop.sandbox import jail, pool, reaper

log = logging.getLogger(__name__)

# Only these variables reach the child; everything else (API keys, tokens, proxies,
# cloud credentials) stays with the host.
_ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def child_env(workdir: str | None) -> dict[str, str]:
    """The child's environment; `workdir` is a weak sandbox's folder, None in a jail."""
    env = {k: os.environ[k] for k in _ENV_ALLOW if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    home, tmp = (workdir, workdir) if workdir else (jail.HOME, "/tmp")
    env.update(HOME=home, TMPDIR=tmp, PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    # Numeric libraries must not start thread pools: a timed worker may not start threads.
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if "LC_ALL" not in env and env.get("LANG", "C") in ("C", "POSIX"):
        # What a fresh interpreter sets in its own environment in the C locale (PEP 538);
        # set here, so that a child forked from a warm parent, which is handed exactly
        # this environment, sees what a fresh one sees (a login without LANG showed it).
        env["LC_CTYPE"] = "C.UTF-8"
    return env


@dataclass(frozen=True)
class Kind:
    """What a slot is made for, known before its job."""

    numpy: bool = False  # forked from the warm parent that has numpy loaded
    read_paths: tuple[str, ...] = ()  # host paths the jail shows read-only, beside Python


@dataclass
class Slot:
    uid: int | None  # the child's user id outside once confined; None when we are not root
    workdir: str  # the jail's stage (empty on the host), or a weak sandbox's directory
    private: Path  # host-only: the child's stdout and stderr files
    proc: subprocess.Popen[bytes] | pool.PooledChild  # the jail's keeper
    parent_pid: int  # the process the child's death signal is tied to
    to_child: int  # the host's ends of the two pipes
    from_child: int
    weak: bool
    jail_pidfd: int | None = None  # the jail's init, once it has said who it is

    def jailed(self, pid: object) -> None:
        """Note the init's pid from its trusted first message: killing it ends the jail."""
        if self.weak or self.jail_pidfd is not None or type(pid) is not int:
            return
        try:
            self.jail_pidfd = os.pidfd_open(pid)
        except OSError:  # already gone, and its jail with it
            pass

    def kill_jail(self) -> None:
        if self.jail_pidfd is not None:
            try:
                signal.pidfd_send_signal(self.jail_pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass


def make(pooled: bool, kind: Kind) -> Slot:
    """A new slot: a child forked from the warm pool, or a fresh interpreter."""
    weak = jail.weak()
    root = os.geteuid() == 0
    uid = reaper.next_uid(weak) if root else None
    private = Path(tempfile.mkdtemp(prefix="stop-host-"))
    workdir = tempfile.mkdtemp(prefix="stop-sbx-")
    if uid is not None and weak:
        os.chown(workdir, uid, uid)
    setup = {"stage": workdir, "uid": uid, "read_paths": list(kind.read_paths), "weak": weak}
    env = child_env(workdir if weak else None)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    proc: subprocess.Popen[bytes] | pool.PooledChild
    try:
        with open(private / "stdout", "wb") as out, open(private / "stderr", "wb") as err:
            if pooled:
                fds = (to_child_r, from_child_w, out.fileno(), err.fileno())
                proc, parent = pool.fork_child(kind.numpy, fds, setup, env)
            else:
                setup["host_pid"] = os.getpid()
                proc, parent = _start_fresh(setup, env, out, err, to_child_r, from_child_w)
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
    return Slot(uid, workdir, private, proc, parent, to_child_w, from_child_r, weak)


def _start_fresh(
    setup: dict, env: dict[str, str], out, err, to_child_r: int, from_child_w: int
) -> tuple[subprocess.Popen[bytes], int]:
    bootstrap = (
        f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
        "from stop.sandbox.child import main; main()"
    )
    try:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-I", "-c", bootstrap),
                *(str(to_child_r), str(from_child_w), json.dumps(setup)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            pass_fds=(to_child_r, from_child_w),
            cwd="/",
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start sandbox child: {exc}") from exc
    return proc, os.getpid()


def release(slot: Slot) -> None:
    """Kill the slot's jail and its keeper now (the kernel ends every process in the
    jail's PID namespace with its init); reap them and remove the host's folders just
    after, on the sweeper thread (`settle` waits). A weak sandbox has no PID namespace:
    its session goes now, the rest of what runs under its user id in the sweep."""
    slot.kill_jail()
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
    if slot.weak and slot.uid is not None:
        reaper.kill_uid(slot.uid)
        reaper.remove_leftovers(slot.uid)
    for fd in (slot.to_child, slot.from_child):
        os.close(fd)
    if slot.jail_pidfd is not None:
        os.close(slot.jail_pidfd)
    shutil.rmtree(slot.private, ignore_errors=True)
    shutil.rmtree(slot.workdir, ignore_errors=True)


_to_sweep: queue.Queue[Slot] = queue.Queue()
_sweeper: threading.Thread | None = None
_sweeper_lock = threading.Lock()

SPARES = 1  # per kind of child: a sequence of jobs never waits; parallel ones may
_spares: dict[Kind, list[Slot]] = {}
_making: dict[Kind, int] = {}
_lock = threading.Lock()


def take(kind: Kind) -> Slot:
    """A pooled slot: the spare if one is ready and alive, else a new one; either way the
    next spare starts in the background. Raises SandboxError if the pool has failed."""
    spare = None
    with _lock:
        spares = _spares.setdefault(kind, [])
        while spares and spare is None:
            spare = spares.pop()
            if spare.proc.poll() is not None:  # its warm parent died under it
                release(spare)
                spare = None
        if _making.get(kind, 0) + len(spares) < SPARES:
            _making[kind] = _making.get(kind, 0) + 1
            threading.Thread(target=_make_spare, args=(kind,), daemon=True).start()
    return spare or make(True, kind)


def _make_spare(kind: Kind) -> None:
    try:
        spare = make(True, kind)
    except SandboxError as exc:
        log.debug("sandbox pool: no spare: %s", exc)
        spare = None
    with _lock:
        _making[kind] -= 1
        if spare is not None:
            _spares.setdefault(kind, []).append(spare)


def _forget_in_child() -> None:
    """A forked copy of the host leaves the host's spares (and its sweeps) to the host."""
    global _sweeper, _to_sweep, _lock, _sweeper_lock
    _lock, _sweeper_lock = threading.Lock(), threading.Lock()  # a thread may have held them
    for spare in _all_spares():
        for fd in (spare.to_child, spare.from_child):
            os.close(fd)
    _making.clear()
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
        spares = _all_spares()
    for spare in spares:
        release(spare)


def _all_spares() -> list[Slot]:
    """Every spare, taken out of the pool."""
    spares = [slot for kind in _spares.values() for slot in kind]
    _spares.clear()
    return spares
