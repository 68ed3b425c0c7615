"""Runtime guard inside a sandbox child: a Python audit hook (PEP 578) that blocks what
untrusted code has no business doing and records every attempt as a finding.

It is a second wall, not the first: the child already runs as its own user, with no
network and with resource limits. The hook makes attempts visible (for the audit of an
improver) and stops them early with a clear error. A hook cannot be removed once added;
the ctypes entry points it would take to get around it are among what it blocks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

_MAX_FINDINGS = 50

# Blocked outright: starting programs, network connections, native code.
_BLOCKED = {
    "subprocess.Popen": "start a subprocess",
    "os.system": "run a shell command",
    "os.exec": "replace the process",
    "os.posix_spawn": "spawn a process",
    "os.spawn": "spawn a process",
    "pty.spawn": "spawn a process",
    "os.fork": "fork",
    "os.forkpty": "fork",
    "socket.connect": "open a network connection",
    "socket.bind": "listen on the network",
    "socket.sendto": "send on the network",
    "ctypes.dlopen": "load native code",
    "ctypes.dlsym": "call native code",
    "ctypes.cdata": "read raw memory",
    "os.kill": "signal a process",
    "os.killpg": "signal a process group",
}
# Blocked outside the sandbox's private folders: changing the file system.
_FILE_CHANGES = {
    "os.remove",
    "os.rename",
    "os.rmdir",
    "os.chmod",
    "os.chown",
    "shutil.rmtree",
    "os.mkdir",
}
# Recorded, not blocked: imports worth knowing about.
_WATCHED_IMPORTS = {
    "os",
    "subprocess",
    "socket",
    "ctypes",
    "sys",
    "importlib",
    "builtins",
    "gc",
    "inspect",
}

# Recorded, not blocked: what it takes to reach the hook's own objects and take the
# guard apart (rare in honest programs), so that the attempt itself is on record.
_TAMPERING = {
    "gc.get_objects": "listed every object of the interpreter",
    "gc.get_referrers": "looked for what refers to an object",
    "gc.get_referents": "looked inside an object's references",
    "sys._current_frames": "reached other threads' frames",
    "sys.settrace": "installed a tracer",
    "sys.setprofile": "installed a profiler",
}

# Off only when the lower walls themselves are under test (run_job(..., guard=False)).
enabled = True


def _inside(path: object, writable: tuple[str, ...]) -> bool:
    if isinstance(path, int):
        return True  # an already open descriptor
    try:
        full = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return any(full == folder or full.startswith(folder + os.sep) for folder in writable)


def install(writable: tuple[str, ...], report: Callable[[str], None]) -> None:
    """Install the hook for the rest of this process's life (and its forks); file
    changes are allowed inside the folders `writable` (the sandbox's private ones).
    `report` sends each finding out of the process the moment it is made: a record
    kept in here would be the watched code's to erase.

    The hook works from copies it closes over, so code that rewrites this module's
    tables or functions afterwards changes nothing.
    """
    if not enabled:
        return
    writable = tuple(os.path.realpath(folder) for folder in writable)
    blocked = tuple(_BLOCKED.items())
    blocked_names = frozenset(_BLOCKED)
    file_changes = frozenset(_FILE_CHANGES)
    watched = frozenset(_WATCHED_IMPORTS)
    tampering = dict(_TAMPERING)
    inside = _inside
    seen: set[str] = set()

    def note(text: str) -> None:
        if text not in seen and len(seen) < _MAX_FINDINGS:
            seen.add(text)
            report(text)

    def hook(event: str, args: tuple) -> None:
        if event in blocked_names:
            what = next(w for name, w in blocked if name == event)
            note(f"blocked: {what} ({event})")
            raise PermissionError(f"blocked by the stop sandbox: {what}")
        if event == "open" and args:
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writes = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR)
            if writes and not inside(args[0], writable):
                note(f"blocked: write outside the working directory ({args[0]!s:.80})")
                raise PermissionError(
                    "blocked by the stop sandbox: write outside the working directory"
                )
        elif event in file_changes and args and not inside(args[0], writable):
            note(f"blocked: {event} outside the working directory ({args[0]!s:.80})")
            raise PermissionError(
                f"blocked by the stop sandbox: {event} outside the working directory"
            )
        elif event == "import" and args and args[0] in watched:
            note(f"imported {args[0]}")
        elif event in tampering:
            note(f"tampering: {tampering[event]} ({event})")

    sys.addaudithook(hook)
