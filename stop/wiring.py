"""The one place that builds a run's parts and closes them: the model backend, the
response cache, the executor, the event log and run store, and, on request, language
models and utilities. The loops (improve.py, self_improve.py) take a built `Run` and run.

    with Run(runs_dir, settings, executor=LocalExecutor(), watchers=(progress,)) as run:
        result = improve(run, config)

Tests hand `backend=` a backend instance (a ScriptedBackend) and read its prompts.
"""

from __future__ import annotations

import functools
import io
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from stop.errors import BadInput
from stop.llm import build_backend
from stop.llm.base import Backend
from stop.llm.cache import ResponseCache, check_cache
from stop.llm.model import LanguageModel
from stop.llm.prices import cost
from stop.llm.purse import Purse
from stop.records import (
    Budget,
    Calibrated,
    Calibrating,
    ModelSettings,
    Money,
    Printed,
    Record,
    UtilityOptions,
)
from stop.sandbox.executor import Executor, LocalExecutor
from stop.scoring.blocks import RULE, Blocks
from stop.scoring.evalcache import EvaluationCache
from stop.scoring.utility import Target, Utility, load_utility
from stop.store import EventLog, RunStore, Watcher

log = logging.getLogger(__name__)


class _PrintedToLog(io.TextIOBase):
    """A stdout whose lines become `printed` events (and -v log lines)."""

    def __init__(self, emit: Callable[[object], None]) -> None:
        self._emit, self._partial, self._lock = emit, "", threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._print(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._partial = self._partial, ""
        if line:
            self._print(line)

    def _print(self, line: str) -> None:
        log.info("printed: %s", line)
        self._emit(Printed(text=line[:2000]))


class Run:
    def __init__(
        self,
        runs_dir: Path,
        model: ModelSettings | None = None,
        *,
        backend: Backend | None = None,
        executor: Executor | None = None,
        use_cache: bool = True,
        watchers: tuple[Watcher, ...] = (),
        money: Money | None = None,
    ) -> None:
        """Everything that can be wrong with the model settings is found here, before
        anything is written; `backend` (an instance) takes the place of `model`. `money`:
        the prices of the run's requests and its cap, which every model of the run draws
        on together (stop/llm/purse.py)."""
        if runs_dir.exists() and not runs_dir.is_dir():
            raise BadInput(f"--runs-dir {runs_dir} is a file, not a folder")
        self.runs_dir = runs_dir
        self.backend = backend if backend is not None else build_backend(model or ModelSettings())
        self.executor = executor or LocalExecutor()
        self.events = EventLog(watchers)
        self.store: RunStore | None = None
        self.use_cache = use_cache
        if use_cache:  # a damaged cache is found now; it is opened with the first model
            check_cache(self._cache_path)
        self._cache: ResponseCache | None = None
        self._evaluations: EvaluationCache | None = None
        self._utilities: list[Utility] = []  # built before the store: given the cache then
        self.purse = None
        if money is not None:
            self.purse = Purse(functools.partial(cost, money.prices), money.max_usd)

    def __enter__(self) -> Run:
        # What user code in the host prints (a utility file's build or scorer) goes to
        # the run's log: stdout is the command's, one JSON object with --json.
        self._stdout = sys.stdout
        sys.stdout = _PrintedToLog(self.emit)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(sys.stdout, _PrintedToLog):
            sys.stdout.flush()
        sys.stdout = self._stdout
        self.close()

    def close(self) -> None:
        if self._cache:
            self._cache.close()
        if self._evaluations:
            self._evaluations.close()
        self.executor.close()

    @property
    def cache(self) -> ResponseCache | None:
        """Opened when the first model is made: bad input found before leaves no file."""
        if self.use_cache and self._cache is None:
            self._cache = ResponseCache(self._cache_path)
        return self._cache

    @property
    def _cache_path(self) -> Path:
        return self.runs_dir / ".cache" / "responses.sqlite3"

    @property
    def evaluations(self) -> EvaluationCache | None:
        """The cache of deterministic evaluations, beside the response cache and, like
        it, off with --no-cache; opened once the run has its folder."""
        if self.use_cache and self._evaluations is None:
            self._evaluations = EvaluationCache(self.runs_dir / ".cache" / "evaluations.sqlite3")
        return self._evaluations

    def emit(self, event: object) -> None:
        self.events.emit(event)

    def create_store(self, kind: str, config: Record) -> RunStore:
        self.store = RunStore.create(self.runs_dir, kind, config, self.events)
        self._share_evaluations()
        return self.store

    def resume_store(self, run_id: str) -> RunStore:
        self.store = RunStore.resume(self.runs_dir, run_id, self.events)
        self._share_evaluations()
        return self.store

    def _share_evaluations(self) -> None:
        # Only once the input was good and the run has its folder: bad input writes nothing.
        for utility in self._utilities:
            utility.evaluations = self.evaluations

    def model(self, budget: Budget, seed: int, role: str | None = None) -> LanguageModel:
        """A language model with its own budget over the run's backend and cache; its
        exchanges go to the run's llm.jsonl (tagged with `role`) once there is one."""
        on_exchange = on_failure = None
        if self.store is not None:
            on_exchange, on_failure = self.store.exchange_logger(role)
        return LanguageModel(
            self.backend,
            max_responses_per_call=budget.max_responses_per_call,
            max_tokens=budget.max_tokens,
            budget_calls=budget.model_calls,
            budget_requests=budget.model_requests,
            budget_tokens=budget.model_tokens,
            seed=seed,
            cache=self.cache,
            on_exchange=on_exchange,
            on_failure=on_failure,
            purse=self.purse,
        )

    def utility(
        self, spec: str, target: Target, options: UtilityOptions, evaluations: int
    ) -> Utility:
        """The utility `spec` names, on this run's executor, with the host's budget of
        evaluations, calibrated (the speed utility times the original: bad input if it
        fails)."""
        utility = load_utility(spec, target, options)
        utility.executor = self.executor
        utility.budget = evaluations
        if self.store is not None:
            utility.evaluations = self.evaluations
        else:
            self._utilities.append(utility)
        utility.blocks = Blocks.of(target.source, str(target.path))
        if utility.blocks:  # the model is told what it may change
            utility.description = f"{utility.description}\n\n{RULE}"
        self.emit(Calibrating(utility=utility.name))
        started = time.monotonic()
        utility.calibrate(target)
        self.emit(Calibrated(utility=utility.name, seconds=time.monotonic() - started))
        return utility
