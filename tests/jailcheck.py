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


def processes_in(namespaces: set[int]) -> list[int]:
    """Live processes (host pids) in any of the PID namespaces `namespaces`."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"{entry.path}/ns/pid").st_ino in namespaces and alive(entry.path):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def survivors(namespaces: set[int], grace_s: float = 3.0) -> list[int]:
    """Processes left in `namespaces` after `grace_s` for killed ones to finish dying;
    any found are killed, so that a failing test leaves no runaway behind."""
    end = time.monotonic() + grace_s
    while True:
        left = processes_in(namespaces)
        if not left or time.monotonic() > end:
            break
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left
