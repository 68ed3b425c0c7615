"""Entry point of a sandbox child: build the jail, read the job, confine, run it, reply.

The child starts as the jail's keeper (stop/sandbox/jail.py): it creates the namespaces,
forks the jail's init, and then only waits for it, so that it can take the whole jail
down if the host goes. The init builds the jail's filesystem, waits for its job, imports
what the job asks for, locks itself in (limits, no capabilities, no_new_privs) and runs
the job. All of this is trusted code; the job's code runs only after `confine`.

With `--weak-sandbox` (where no jail can be built) the child confines itself the old way
(stop/sandbox/confine.py): limits, namespaces where they can be had, and as root a user
id of its own, which can no longer read the Python installation, hence the preloads.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys

# Imported by the warm parent, so that pooled children start with them (a speed measure),
# and by a weak sandbox before it drops its privileges (there a wall: see above).
COMMON = (
    "traceback",
    "math",
    "cmath",
    "functools",
    "itertools",
    "collections",
    "heapq",
    "bisect",
    "random",
    "re",
    "string",
    "operator",
    "typing",
    "dataclasses",
    "statistics",
    "fractions",
    "decimal",
    "array",
    "copy",
    "time",
    "datetime",
    "json",
    "struct",
    "hashlib",
    "enum",
    "textwrap",
    "numbers",
    "threading",
    "queue",
    "contextlib",
    "signal",
    "unicodedata",
    "stop.helpers",
    "stop.errors",
)


class Channel:
    """The child's end of the newline-delimited JSON pipes (see channel.Channel)."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._r = os.fdopen(rfd, "rb")
        self._w = os.fdopen(wfd, "wb")

    def send(self, message: dict) -> None:
        self._w.write(json.dumps(message).encode() + b"\n")
        self._w.flush()

    def recv(self) -> dict:
        line = self._r.readline()
        if not line:
            raise EOFError("host closed the channel")
        return json.loads(line)

    def fileno(self) -> int:
        """The descriptor messages go out on (the guard writes findings to it)."""
        return self._w.fileno()

    def call(self, body: dict) -> dict:
        self.send({"type": "rpc", "body": body})
        return self.recv()


def main() -> None:
    """A fresh child: `python -I -c ... main()` with its pipes and its setup as arguments."""
    serve(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))


def preload(names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def serve(rfd: int, wfd: int, setup: dict) -> None:
    """`setup` is the slot's (slots.py): the jail's stage folder, the private uid (root
    only), the paths the job may read, the host's pid, and whether the sandbox is weak."""
    from stop.sandbox import confine, jail

    chan = Channel(rfd, wfd)
    outer_pid = None  # the jail's init, as the host sees it
    if setup["weak"]:
        isolated = confine.isolate()
    else:
        try:
            init, outer_pid = jail.enter(
                setup["stage"], setup["uid"], jail.view(tuple(setup["read_paths"]))
            )
        except jail.JailError as exc:  # the host raises it: no silent fallback
            chan.send({"type": "jail_failed", "error": str(exc)})
            return
        if not init:
            chan._r.close()
            chan._w.close()
            _keep(outer_pid, setup["host_pid"])
        # The PID namespace by its inode: the host's tests find every process in it.
        pidns = os.stat("/proc/self/ns/pid").st_ino
        isolated = ["userns", "mntns", f"pidns={pidns}", "netns", "ipcns"]
    job = chan.recv()  # a pool's spare child waits here, isolated
    preload((*COMMON, *job.get("preload", ())) if setup["weak"] else job.get("preload", ()))
    from stop.sandbox import guard, jobs, worker

    guard.enabled = job.get("guard", True) is not False
    # The host's CPU limit on each call of untrusted code (runner.Limits.call_cpu_s), for
    # the jobs that set none of their own; set here, in the trusted init, before the job.
    worker.default_limit_s = job["confine"].get("call_cpu_s")
    run = jobs.JOBS[job["kind"]]
    if setup["weak"]:
        isolation = confine.confine(job["confine"], isolated)
    else:
        lock = job["kind"] == "improve"  # candidates: each in a worker that drops them
        isolation = confine.confine_jailed(job["confine"], isolated, setup["uid"], lock)
    # The init's pid as the host sees it: killing it ends the PID namespace and all in it.
    chan.send({"type": "confined", "isolation": isolation, "pid": outer_pid})
    value = run(job["payload"], chan)
    # Flushed first: once the result is sent, the host may take the output and move on.
    sys.stdout.flush()
    sys.stderr.flush()
    chan.send({"type": "result", "body": value})


def _keep(init: int, host_pid: int) -> None:
    """The keeper's life: wait for the init, exit as it did. If the host dies (and with it
    the warm parent), the death signal arrives as SIGTERM and takes the init down."""
    from stop.sandbox import confine

    signal.signal(signal.SIGTERM, lambda *_: os.kill(init, signal.SIGKILL))
    confine.die_with_parent(host_pid, signal.SIGTERM)
    _, status = os.waitpid(init, 0)
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # die of the same signal: the host describes the exit by it
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)
