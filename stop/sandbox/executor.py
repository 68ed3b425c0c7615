"""Where sandboxed evaluations run: on this machine (the default) or on a Ray cluster.

Every evaluation that needs no conversation with the host (a candidate's score, a speed
measurement, a meta-utility test's validation and test scoring) goes through `evaluate`,
so one switch (`use`) sends them all elsewhere. Improver runs talk to the host's
language model over their pipe, so they always run here; their utility calls come back
to the host and go out through `evaluate` like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from stop.sandbox.runner import Limits, SandboxResult, run_job


class Executor(Protocol):
    name: str

    def run(
        self, kind: str, payload: dict[str, Any], limits: Limits, preload: tuple[str, ...]
    ) -> SandboxResult:
        """Run sandbox job `kind` somewhere; a job that could not run is a "crash" result
        (scored as failed), never an exception, unless the executor itself is unusable."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Sandboxes on this machine (stop/sandbox/runner.py, warm pool when available)."""

    name = "local"

    def run(
        self, kind: str, payload: dict[str, Any], limits: Limits, preload: tuple[str, ...]
    ) -> SandboxResult:
        return run_job(kind, payload, limits, preload=preload)

    def close(self) -> None:
        pass


_current: Executor = LocalExecutor()


def current() -> Executor:
    return _current


@contextlib.contextmanager
def use(executor: Executor) -> Iterator[Executor]:
    """Send every evaluation to `executor` inside the block; close it afterwards."""
    global _current
    previous, _current = _current, executor
    try:
        yield executor
    finally:
        _current = previous
        executor.close()


def evaluate(
    kind: str, payload: dict[str, Any], limits: Limits, preload: tuple[str, ...] = ()
) -> SandboxResult:
    """Run an evaluation job (no conversation with the host) on the current executor."""
    return _current.run(kind, payload, limits, preload)
