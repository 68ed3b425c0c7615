"""Sandboxed evaluations on a Ray cluster (`--executor ray --ray-address HOST:PORT`).

Each evaluation becomes one Ray task that calls `run_job` on a worker node, so the
candidate is confined there by that node's sandbox exactly as it would be here. Only
evaluations travel (see stop/sandbox/executor.py): improver runs talk to the host's
language model over a pipe and stay on this machine.

Failure semantics. An evaluation comes back exactly once, as a SandboxResult:
- the worker (or its node) dies mid-task: Ray runs the task again, up to `retries` more
  times. The jobs are deterministic and write nothing outside their sandbox, so a second
  run is safe; only the run that finishes is seen here.
- it dies on every try, or nothing comes back in time: a "crash" result that says so, and
  the task is cancelled. It is scored as a failure, once: budgets are charged by the
  host's `Utility.use`, once per evaluation, whatever happened on the cluster.
- the stop code on the worker raises, or the cluster itself is gone: SandboxError, as a
  broken local sandbox would, because scoring everything 0 would hide it.

`ray` is imported only here and only when this executor is built: `stop --help` and the
local executor never load it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from stop.errors import BadInput, SandboxError
from stop.sandbox import jail
from stop.sandbox.runner import Limits, SandboxResult

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0  # reaching the cluster and running one probe task there
RETRIES = 2  # extra runs of a task whose worker or node died
# A lost task is given up after (retries + 1) runs of its wall-clock limit, each plus
# START_SLACK_S for a fresh worker and sandbox, plus QUEUE_SLACK_S of waiting for a free
# CPU: a busy cluster queues tasks, and a queued task is not a lost one.
START_SLACK_S = 60.0
QUEUE_SLACK_S = 600.0


def _run_job_remote(
    kind: str,
    payload: dict[str, Any],
    limits: dict[str, Any],
    preload: list[str],
    read_paths: list[str],
    weak: bool,
) -> dict[str, Any]:
    """Runs on a Ray worker, in a jail of the worker's own (`read_paths` name the
    worker's files). Plain data in and out: the driver rebuilds the models, so the two
    ends need the same stop version, not the same pickled classes. `weak`: the
    driver's --weak-sandbox."""
    from stop.sandbox import jail
    from stop.sandbox.runner import Limits, run_job

    jail.weak_allowed = weak
    result = run_job(
        kind, payload, Limits(**limits), preload=tuple(preload), read_paths=tuple(read_paths)
    )
    return result.model_dump()


def _probe() -> dict[str, Any]:
    """Runs on a Ray worker: what the driver needs to know about the nodes."""
    import stop
    from stop.sandbox import jail

    return {"version": stop.__version__, "jail": jail.unavailable(), "node": socket.gethostname()}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BadInput("Ray is not installed: pip install 'stop[ray]'") from exc
    return ray


def _check_reachable(address: str, timeout_s: float) -> None:
    """Fail fast on a closed port or a dead host: Ray itself retries for minutes."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and the like: Ray resolves them itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise BadInput(f"cannot reach the Ray cluster at {address}: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class RayExecutor:
    """Evaluations as Ray tasks, each sandboxed on its worker."""

    name = "ray"

    def __init__(
        self,
        address: str,
        *,
        retries: int = RETRIES,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        queue_slack_s: float = QUEUE_SLACK_S,
        start_slack_s: float = START_SLACK_S,
    ) -> None:
        self.address, self.retries = address, retries
        self.queue_slack_s, self.start_slack_s = queue_slack_s, start_slack_s
        self.connect_timeout_s = connect_timeout_s
        self.evaluations = 0  # results that came back from the cluster
        self.lost = 0  # evaluations scored as crashes because the cluster lost them
        self._count_lock = threading.Lock()  # evaluations run in many threads at once
        self._task: Any = None
        self._ray = ray = _import_ray()
        deadline = time.monotonic() + connect_timeout_s
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            _check_reachable(address, min(5.0, connect_timeout_s))
            self._connect(deadline)
        try:
            self._check_workers(deadline)
        except BaseException:
            self.close()
            raise
        # Retries are for system failures (a dead worker or node) only: a job that raised
        # would raise again.
        self._task = ray.remote(_run_job_remote).options(
            num_cpus=1, max_retries=retries, retry_exceptions=False
        )

    def _connect(self, deadline: float) -> None:
        outcome: dict[str, BaseException | None] = {}

        def connect() -> None:
            try:
                self._ray.init(
                    address=self.address, logging_level=logging.ERROR, log_to_driver=False
                )
                outcome["error"] = None
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                outcome["error"] = exc

        # ray.init has no timeout of its own and retries an address that answers but is
        # not Ray for minutes; a daemon thread bounds it and does not keep the process up.
        thread = threading.Thread(target=connect, name="ray-connect", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if "error" not in outcome:
            self._owns_connection = False  # it may still connect; nothing of ours to close
            raise BadInput(
                f"cannot reach the Ray cluster at {self.address}: no answer within "
                f"{self.connect_timeout_s:g} s (is it a Ray head node's GCS port, usually 6379?)"
            )
        if outcome["error"] is not None:
            self._owns_connection = False
            error = outcome["error"]
            raise BadInput(
                f"cannot reach the Ray cluster at {self.address}: {_first_line(error)}"
            ) from error

    def _check_workers(self, deadline: float) -> None:
        """One probe task: the workers run this stop, and can build its jail."""
        ray = self._ray
        # No CPU asked: a cluster busy with other work still answers the probe.
        ref = ray.remote(_probe).options(num_cpus=0, max_retries=1).remote()
        try:
            info = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
        except ray.exceptions.GetTimeoutError as exc:
            ray.cancel(ref, force=True)
            raise BadInput(
                f"the Ray cluster at {self.address} ran no task within {self.connect_timeout_s:g} s"
            ) from exc
        except ray.exceptions.RayError as exc:
            raise BadInput(
                f"the Ray cluster at {self.address} cannot run stop's tasks (install "
                f"'stop[ray]' of the same version on every node): {_first_line(exc)}"
            ) from exc
        import stop

        if info["version"] != stop.__version__:
            raise BadInput(
                f"the Ray workers run stop {info['version']}, this is stop {stop.__version__}: "
                "install the same version on every node"
            )
        if info["jail"] and not jail.weak_allowed:
            raise jail.JailError(
                f"the Ray workers on {info['node']} cannot build the sandbox's jail "
                f"({info['jail']}); --weak-sandbox runs untrusted code there without it"
            )
        log.info("ray: connected to %s", self.address)

    def run(
        self,
        kind: str,
        payload: dict[str, Any],
        limits: Limits,
        preload: tuple[str, ...],
        read_paths: tuple[str, ...] = (),
    ) -> SandboxResult:
        ray = self._ray
        started = time.monotonic()
        ref = self._task.remote(
            kind, payload, limits.model_dump(), list(preload), list(read_paths), jail.weak_allowed
        )
        runs = self.retries + 1
        timeout = self.queue_slack_s + runs * (limits.wall_s + self.start_slack_s)
        lost = (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.OutOfMemoryError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.TaskCancelledError,
        )
        try:
            data = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)  # every timeout kills what it times
            return self._lost(started, f"Ray task gave no result within {timeout:g} s; cancelled")
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            raise SandboxError(
                f"the sandbox failed on a Ray worker: {type(cause).__name__}: {_first_line(cause)}"
            ) from exc
        except lost as exc:
            return self._lost(started, f"Ray worker died ({runs} tries): {_first_line(exc)}")
        except ray.exceptions.RayError as exc:
            raise SandboxError(
                f"lost the Ray cluster at {self.address}: {_first_line(exc)}"
            ) from exc
        with self._count_lock:
            self.evaluations += 1
        return SandboxResult.model_validate(data)

    def _lost(self, started: float, error: str) -> SandboxResult:
        with self._count_lock:
            self.lost += 1
        log.warning("ray: %s", error)
        return SandboxResult(status="crash", error=error, wall_s=time.monotonic() - started)

    def close(self) -> None:
        if self._task is not None:
            log.info(
                "ray: %d evaluations ran on the cluster at %s, %d lost (scored as crashes)",
                self.evaluations,
                self.address,
                self.lost,
            )
        if self._owns_connection:
            self._owns_connection = False
            self._ray.shutdown()
