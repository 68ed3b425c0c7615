"""What the tests check of a finished sandbox from outside, as root and as an ordinary
user alike: no process of its jail is left.

Each sandbox reports the inode of its PID namespace in its isolation list
("pidns=<inode>"); a process is the jail's exactly when /proc/<pid>/ns/pid is that
inode. The owner of a user namespace may read this of every process in it, so the scan
sees hidden (non-dumpable) processes too.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from stop.sandbox.runner import SandboxResult


def pid_namespace(result: SandboxResult) -> int:
    found = [int(x.split("=", 1)[1]) for x in result.isolation if x.startswith("pidns=")]
    assert len(found) == 1, result.isolation
    return found[0]


def alive(pid_dir: str) -> bool:
    """Any thread not a zombie (a leader may be a zombie while its threads run)."""
    for task in os.listdir(f"{pid_dir}/task"):
        with open(f"{pid_dir}/task/{task}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[-1].split()[0] != b"Z":
                return True
    return False


def _live(matches: Callable[[str], bool]) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if matches(entry.path) and alive(entry.path):
                    found.append(int(entry.name))
            except (OSError, StopIteration, ValueError):
                continue  # a process that ended while it was read
    return found


def processes_in(namespaces: set[int]) -> list[int]:
    """Live processes (host pids) in any of the PID namespaces `namespaces`."""
    return _live(lambda d: os.stat(f"{d}/ns/pid").st_ino in namespaces)


def _uids(pid_dir: str) -> set[int]:
    with open(f"{pid_dir}/status") as f:
        line = next(x for x in f if x.startswith("Uid:"))
    return {int(x) for x in line.split()[1:]}


def processes_of(uids: set[int]) -> list[int]:
    """Live processes with any of `uids` as real, effective, saved or file-system uid
    (weak mode and root's private uids).

    Read from /proc/<pid>/status, not the directory's owner: /proc/<pid> of a process
    that made itself non-dumpable may be owned by root."""
    return _live(lambda d: bool(_uids(d) & uids))


def _settled(find: Callable[[], list[int]], grace_s: float) -> list[int]:
    """What `find` still finds after `grace_s` for killed processes to finish dying."""
    end = time.monotonic() + grace_s
    while True:
        left = find()
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


def survivors(namespaces: set[int], grace_s: float = 3.0) -> list[int]:
    """Processes left in `namespaces` after `grace_s` for killed ones to finish dying;
    any found are killed, so that a failing test leaves no runaway behind."""
    left = _settled(lambda: processes_in(namespaces), grace_s)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


def uid_survivors(uids: set[int], grace_s: float = 3.0) -> list[int]:
    """Processes of `uids` left after `grace_s` for killed ones to finish dying."""
    return _settled(lambda: processes_of(uids), grace_s)
