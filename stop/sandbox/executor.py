"""Where sandboxed evaluations run: on this machine (the default) or on a Ray cluster.

Every evaluation that needs no conversation with the host (a candidate's score, a speed
measurement, a meta-utility test's validation and test scoring) goes through the
executor its utility was given (stop/wiring.py gives every utility of a run the run's).
Improver runs talk to the host's language model over their pipe, so they always run
here; their utility calls come back to the host and go out through the executor.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from stop.errors import BadInput
from stop.sandbox.runner import Limits, SandboxResult, run_job


class Executor(Protocol):
    name: str

    def run(
        self,
        kind: str,
        payload: dict[str, Any],
        limits: Limits,
        preload: tuple[str, ...],
        read_paths: tuple[str, ...] = (),
    ) -> SandboxResult:
        """Run sandbox job `kind` somewhere, its jail showing `read_paths` besides Python;
        a job that could not run is a "crash" result (scored as failed), never an
        exception, unless the executor itself is unusable (no jail can be built, say)."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Sandboxes on this machine (stop/sandbox/runner.py, warm pool when available)."""

    name = "local"

    def run(
        self,
        kind: str,
        payload: dict[str, Any],
        limits: Limits,
        preload: tuple[str, ...],
        read_paths: tuple[str, ...] = (),
    ) -> SandboxResult:
        return run_job(kind, payload, limits, preload=preload, read_paths=read_paths)

    def close(self) -> None:
        pass


def open_executor(name: str, address: str | None) -> Executor:
    """The executor the CLI's `--executor NAME --ray-address ADDRESS` ask for; Ray is
    imported only when asked for."""
    if name == "local":
        if address:
            raise BadInput("--ray-address needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        address = address or os.environ.get("RAY_ADDRESS")
        if not address:
            raise BadInput(
                "--executor ray needs the cluster's address: --ray-address HOST:PORT "
                "(or the RAY_ADDRESS environment variable)"
            )
        from stop.sandbox.ray_executor import RayExecutor

        return RayExecutor(address)
    raise BadInput(f"unknown executor {name!r}; executors: local, ray")
