"""Self-confinement of a sandbox child, applied before any untrusted code runs: inside
its jail (`confine_jailed`), or, with --weak-sandbox where no jail can be built, without
one (`isolate`, then `confine`)."""

from __future__ import annotations

import ctypes
import os
import resource
import signal

_CLONE_NEWUSER, _CLONE_NEWNET, _CLONE_NEWIPC = 0x10000000, 0x40000000, 0x08000000
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> bool:
    """unshare(2) through libc: os.unshare only exists from Python 3.12."""
    try:
        return _libc().unshare(flags) == 0
    except (OSError, AttributeError):
        return False


def _limit(which: int, value: int) -> None:
    hard = resource.getrlimit(which)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def isolate() -> list[str]:
    """The weak sandbox's isolation, before the job is known: private network and IPC
    namespaces where they can be had. What needs the job comes in `confine`."""
    applied = []
    if os.geteuid() == 0:
        if _unshare(_CLONE_NEWNET):
            applied.append("netns")
        # Private System V IPC: shared memory and queues die with the sandbox.
        if _unshare(_CLONE_NEWIPC):
            applied.append("ipcns")
    elif _unshare(_CLONE_NEWUSER | _CLONE_NEWNET):
        applied.append("netns")
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # until the uid change clears it
    return applied


def _limits(spec: dict) -> None:
    mb = 1 << 20
    _limit(resource.RLIMIT_AS, spec["memory_mb"] * mb)
    _limit(resource.RLIMIT_FSIZE, spec["file_mb"] * mb)
    _limit(resource.RLIMIT_NOFILE, spec["open_files"])
    _limit(resource.RLIMIT_CORE, 0)
    # No RLIMIT_CPU: the host's wall clock is the limit, and an armed CPU limit would make
    # the kernel report process CPU time only to the tick (4 ms), which the speed
    # utility's forgery check cannot live with.


def confine_jailed(
    spec: dict, isolated: list[str], private_uid: int | None, lock: bool
) -> list[str]:
    """In the jail's init, just before the job's code: limits and no_new_privs, and with
    `lock` no capabilities either (an improver runs here; a candidate runs in a worker,
    which renews its scratch folders and drops them itself). Returns all that was
    applied, `isolated` included."""
    from stop.sandbox import jail

    _limits(spec)
    # Processes count per user of the jail's own user namespace, so this binds as root
    # and as an ordinary user alike.
    _limit(resource.RLIMIT_NPROC, spec["processes"])
    jail.lock() if lock else jail.no_new_privs()
    os.chdir(jail.WORKDIR)
    applied = ["rlimits", *isolated, "no_new_privs"]
    return applied + ([f"uid={private_uid}"] if private_uid is not None else [])


def confine(spec: dict, isolated: list[str]) -> list[str]:
    """The weak sandbox's confinement (no jail): apply limits, drop privileges; return
    all that was applied, `isolated` included."""
    applied = ["rlimits", *isolated]
    _limits(spec)
    # If the host dies, the parent-death signal below takes the child with it.
    uid = spec.get("uid")
    if uid is not None:
        # RLIMIT_NPROC counts processes per real user id; it binds once we are `uid`.
        _limit(resource.RLIMIT_NPROC, spec["processes"])
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        applied.append(f"uid={uid}")
    die_with_parent(spec["host_pid"])
    _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    applied.append("no_new_privs")
    os.chdir(spec["workdir"])
    return applied


def die_with_parent(host_pid: int, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to this process when its parent dies; the signal is not inherited by
    forks, and a uid change clears it, so each process sets it for itself."""
    _libc().prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != host_pid:  # the host died before we asked
        os._exit(1)
