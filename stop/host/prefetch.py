"""Cost-aware scheduling inside one improver run: candidates are scored while the model
is still busy, instead of after every sample is in.

When the model's replies come back to the host, each reply's program is submitted for
evaluation at once, and the original program is submitted when the run starts; when the
improver then asks the utility for that exact program, the evaluation it gets is the one
already running or done. Budgets are unchanged: a prefetched evaluation is charged when
the improver asks for it, and one it never asks for is never charged (only its CPU time
is lost); when the improver returns, the evaluations nobody asked for are killed, so that
they never delay the end of the run. Utilities opt in (`Utility.prefetch`): those whose
evaluation is a sandboxed run of the program, not those that call the language model
(the meta-utility).

No program is evaluated twice in a run when the utility is deterministic
(`Utility.cacheable`): programs that are the same once comments and whitespace are
normalised share one evaluation, and the second ask gets it marked `reused`. A noisy
utility (speed) measures every ask afresh.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from stop.llm.model import LanguageModel
from stop.sandbox.runner import Group
from stop.scoring.sameness import program_key
from stop.scoring.utility import Evaluation, Utility

WORKERS = 2  # evaluations in flight beside the model: the sandboxes of a 2-core machine


class Prefetcher:
    def __init__(
        self, utility: Utility, workers: int = WORKERS, model: LanguageModel | None = None
    ) -> None:
        self.utility, self.model = utility, model
        self._pool = ThreadPoolExecutor(workers, "prefetch") if utility.prefetch else None
        self._group = Group()
        self._shared = utility.cacheable  # one evaluation per program for the whole run
        self._pending: dict[str, Future[Evaluation]] = {}
        self._taken: set[str] = set()  # keys whose evaluation an improver has had

    def _key(self, program: str) -> str:
        return program_key(program, self.utility.language) if self._shared else program

    def submit(self, program: str | None) -> None:
        if self._pool is not None and program:
            self.future(program)

    def future(self, program: str) -> Future[Evaluation]:
        """The evaluation of `program`, started now unless it is already running or done
        (evaluated here, at once, for a utility that does not prefetch)."""
        key = self._key(program)
        found = self._pending.get(key)
        if found is not None:
            return found
        if self._pool is None:
            started: Future[Evaluation] = Future()
            started.set_result(self.judge(program))
        else:
            started = self._pool.submit(self._judge, program)
        self._pending[key] = started
        return started

    def _judge(self, program: str) -> Evaluation:
        with self._group:
            return self.judge(program)

    def judge(self, program: str) -> Evaluation:
        """The utility's evaluation; a timing taken while the embedded model generated on
        the same cores is marked provisional (the improver ranks by it; no view shows it
        as a score, and the run's figures are the re-scoring's)."""
        if self.model is None or not self.utility.noisy:
            return self.utility.judge(program)
        mark = self.model.mark()
        evaluation = self.utility.judge(program)
        if self.model.busy(mark):
            return evaluation.model_copy(update={"provisional": True})
        return evaluation

    def take(self, program: str) -> Evaluation:
        """The evaluation of `program`: the one prefetched (waited for), else one run now.
        For a deterministic utility every later ask of the same program gets it again,
        marked reused; otherwise each evaluation is taken once and the next ask measures
        again. An evaluation that failed in its thread is run again here, where its error
        surfaces."""
        key = self._key(program)
        future = self._pending.get(key) if self._shared else self._pending.pop(key, None)
        if future is None:
            future = self.future(program)
            if not self._shared:
                self._pending.pop(key, None)
        try:
            evaluation = future.result()
        except Exception:  # noqa: BLE001 - run again below, where errors surface
            self._pending.pop(key, None)
            return self.judge(program)
        if not self._shared:
            return evaluation
        if key in self._taken and evaluation.reused is None:
            return evaluation.model_copy(update={"reused": "run"})
        self._taken.add(key)
        return evaluation

    def close(self) -> None:
        """Kill the evaluations still running or waiting: nobody will take them."""
        if self._pool is not None:
            self._group.kill()
            self._pool.shutdown(wait=False, cancel_futures=True)
