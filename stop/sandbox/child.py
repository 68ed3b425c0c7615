"""Entry point of a sandbox child: read the job, confine, run it, reply.

Everything here runs before untrusted code does, so it imports what the job needs first:
once the child has dropped to its own user id it may no longer be able to read the
Python installation (under /root, for instance).
"""

from __future__ import annotations

import importlib
import json
import os
import sys

# Imported while still privileged: modules that candidate programs commonly use.
_COMMON = (
    "traceback", "math", "cmath", "functools", "itertools", "collections", "heapq", "bisect",
    "random", "re", "string", "operator", "typing", "dataclasses", "statistics", "fractions",
    "decimal", "array", "copy", "time", "datetime", "json", "struct", "hashlib", "enum",
    "textwrap", "numbers", "threading", "queue", "contextlib", "signal", "unicodedata",
    "stop.helpers", "stop.errors",
)  # fmt: skip


class Channel:
    """The child's end of the newline-delimited JSON pipes (see runner._Channel)."""

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

    def call(self, body: dict) -> dict:
        self.send({"type": "rpc", "body": body})
        return self.recv()


def main() -> None:
    """A fresh child: `python -I -c ... main()` with the job's pipes as arguments."""
    serve(int(sys.argv[1]), int(sys.argv[2]))


def preload(names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def serve(rfd: int, wfd: int) -> None:
    """Read the job, import what it needs, confine, run it, reply."""
    from stop.sandbox.confine import confine, isolate

    chan = Channel(rfd, wfd)
    isolated = isolate()  # a pool's spare child waits for its job isolated
    job = chan.recv()
    preload((*_COMMON, *job.get("preload", ())))
    from stop.sandbox import guard, jobs

    guard.enabled = job.get("guard", True) is not False
    run = jobs.JOBS[job["kind"]]
    isolation = confine(job["confine"], isolated)
    chan.send({"type": "confined", "isolation": isolation})
    value = run(job["payload"], chan)
    # Flushed first: once the result is sent, the host may take the output and move on.
    sys.stdout.flush()
    sys.stderr.flush()
    chan.send({"type": "result", "body": value})
