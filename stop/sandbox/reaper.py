"""Private user ids for sandboxes run as root, and the host's sweeps after a sandbox.

A jailed sandbox needs no sweep beyond its own process group: the kernel ends every
process in its PID namespace with its init, and its files live on its own tmpfs. A weak
sandbox (--weak-sandbox, no jail) has neither, so there the host kills every process
left under its private user id (double forks, setsid()) and removes what that user left
in the shared temporary folders.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

_UID_BASE, _UID_SPAN = 200_000, 100_000
_uid_counter = itertools.count()
# World-writable folders a sandbox user can leave files in.
_SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def _processes() -> Iterator[tuple[os.DirEntry, int]]:
    """(its /proc entry, its user id) for every process."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                yield entry, entry.stat().st_uid
            except OSError:
                continue


def next_uid(weak: bool) -> int:
    """A private uid for a sandbox run as root. A weak sandbox's uid must be held by no
    process (another stop's sandbox, most likely): its sweep kills by uid. A jail's
    processes are found through its PID namespace instead, so a counter suffices."""
    in_use = {uid for _, uid in _processes()} if weak else set()
    while True:
        uid = _UID_BASE + (os.getpid() * 7919 + next(_uid_counter)) % _UID_SPAN
        if uid not in in_use:
            return uid


def kill_uid(uid: int) -> None:
    """SIGKILL every process owned by `uid` until none is left (fork bombs respawn)."""
    for _ in range(50):
        found = False
        for entry, owner in _processes():
            if owner == uid and not _is_zombie(entry.path):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    found = True
                except (ProcessLookupError, PermissionError):
                    continue
        if not found:
            return
        time.sleep(0.01)
    log.warning("sandbox: processes of uid %d survived repeated SIGKILL", uid)


def _is_zombie(proc_dir: str) -> bool:
    """A killed process stays in /proc until reaped, holding nothing. A leader that
    exited while its other threads run also shows "Z": it is dead only if all are."""
    try:
        for task in os.scandir(f"{proc_dir}/task"):
            with open(f"{task.path}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[-1].split()[0] != b"Z":
                    return False
    except OSError:
        pass
    return True


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def remove_leftovers(uid: int) -> None:
    """Remove what the sandbox user left in the shared temporary folders and in the
    world-writable folders directly inside them (/tmp/.X11-unix...)."""
    nested = []
    for folder in _SHARED_DIRS:
        for entry, owner, mode in _entries(folder):
            if owner == uid:
                _remove(entry)
            elif mode & 0o002 and entry.is_dir(follow_symlinks=False):
                nested.append(entry.path)
    for folder in nested:
        for entry, owner, _ in _entries(folder):
            if owner == uid:
                _remove(entry)


def _entries(folder: str) -> Iterator[tuple[os.DirEntry, int, int]]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        yield entry, info.st_uid, info.st_mode


def _remove(entry: os.DirEntry) -> None:
    try:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)
    except OSError:
        pass
