"""Cost-aware scheduling inside one improver run: candidates are scored while the model
is still busy, instead of after every sample is in.

When the model's replies come back to the host, each reply's program is submitted for
evaluation at once, and the original program is submitted when the run starts; when the
improver then asks the utility for that exact program, the evaluation it gets is the one
already running or done. Budgets are unchanged: a prefetched evaluation is charged when
the improver asks for it, and one it never asks for is never charged (only its CPU time
is lost). Utilities opt in (`Utility.prefetch`): those whose evaluation is a sandboxed
run of the program, not those that call the language model (the meta-utility).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from stop.scoring.utility import Evaluation, Utility

WORKERS = 2  # evaluations in flight beside the model: the sandboxes of a 2-core machine


class Prefetcher:
    def __init__(self, utility: Utility, workers: int = WORKERS) -> None:
        self.utility = utility
        self._pool = ThreadPoolExecutor(workers, "prefetch") if utility.prefetch else None
        self._pending: dict[str, Future[Evaluation]] = {}

    def submit(self, program: str | None) -> None:
        if self._pool is not None and program and program not in self._pending:
            self._pending[program] = self._pool.submit(self.utility.judge, program)

    def take(self, program: str) -> Evaluation | None:
        """The prefetched evaluation of exactly `program` (waiting for it), once; None if
        there is none, or if it failed (then the caller evaluates as usual)."""
        future = self._pending.pop(program, None)
        if future is None:
            return None
        try:
            return future.result()
        except Exception:  # noqa: BLE001 - evaluated again in the caller, where errors surface
            return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
