"""Requests and evaluations an improver keeps outstanding, taken as they finish.

An improver that submits (`language_model.submit`, `utility.submit`) gets a handle at
once and later waits for whichever of its handles finishes first (`language_model.wait`).
Model requests go to the backend through a dispatcher of `concurrency` threads, the one
limit on requests in flight for the backend; a backend that decodes batches (the
embedded model) gets the requests that queued together as one batch. Budgets are charged
when a request is submitted (LanguageModel.reserve), so nothing in flight can overspend.

Replay. Which handle finishes first depends on the server's latencies, and an improver's
next request depends on what it was given, so the order of deliveries is recorded
(`on_delivered`) and a resumed run is handed its handles in the recorded order: with the
replies replayed from the response cache, its requests are the same and none is paid
twice. Where the improver asks for something the record does not hold (a noisy utility
scored differently), the rest of the record is dropped and the run goes on live.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from stop.llm.base import Prompt
from stop.llm.model import LanguageModel

log = logging.getLogger(__name__)

GATHER_S = 0.05  # a batching backend waits this long for more requests to batch with
TIMED_OUT = -1  # in a delivery record: the wait ran out of time with nothing finished


@dataclass
class _Request:
    prompt: Prompt
    future: Future[Any]


class Dispatcher:
    """Sends reserved prompts to the model, `workers` at a time; each future resolves to
    the prompt's Completion or ModelError."""

    def __init__(self, model: LanguageModel, workers: int, batches: bool) -> None:
        self.model, self.batches = model, batches
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        # Daemon threads: a request the run no longer waits for never holds the exit.
        self._threads = [
            threading.Thread(target=self._work, name=f"model-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def send(self, prompt: Prompt) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put(_Request(prompt, future))
        return future

    def _work(self) -> None:
        while (first := self._queue.get()) is not None:
            group = [first]
            if self.batches:
                self._gather(group)
            outcomes: list[Any]
            try:
                outcomes = self.model.complete([r.prompt for r in group])
            except Exception as exc:  # noqa: BLE001 - a bug of ours fails these requests only
                log.exception("the model dispatcher failed")
                outcomes = [exc] * len(group)
            for request, outcome in zip(group, outcomes, strict=True):
                request.future.set_result(outcome)

    def _gather(self, group: list[_Request]) -> None:
        """Add the requests that queue within GATHER_S and share the first one's system
        message and temperature (one batch of the backend), up to a call's most."""
        key = _batch_key(group[0].prompt)
        deadline = time.monotonic() + GATHER_S
        held: list[_Request | None] = []
        while len(group) < self.model.max_responses_per_call:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is not None and _batch_key(item.prompt) == key:
                group.append(item)
            else:
                held.append(item)
        for item in held:  # to the next batch, in their order
            self._queue.put(item)

    def close(self, wait_s: float) -> None:
        """Requests not yet sent are dropped (their reservations given back); those being
        answered are waited for up to `wait_s`, so that what they cost is counted and
        their replies are cached for a resume."""
        dropped = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                dropped.append(item)
        self.model.release([r.prompt for r in dropped])
        for request in dropped:
            request.future.cancel()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        abandoned = sum(thread.is_alive() for thread in self._threads)
        if abandoned:
            # Still being answered: counted as spent at their worst, never as free.
            log.warning("%d model requests still in flight were abandoned", abandoned)
            self.model.abandon()


def _batch_key(prompt: Prompt) -> tuple[str, float]:
    return prompt.expertise, prompt.temperature


class Flight:
    """The handles of one improver run: futures by number, taken in order of finishing."""

    def __init__(
        self,
        schedule: list[int] | None = None,
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        self._numbers = itertools.count(1)
        self._futures: dict[int, Future[Any]] = {}
        self._finished: list[int] = []  # in the order they finished
        self._changed = threading.Condition()
        self._schedule = list(schedule or [])
        self._on_delivered = on_delivered or (lambda handle: None)

    def add(self, future: Future[Any]) -> int:
        handle = next(self._numbers)
        with self._changed:
            self._futures[handle] = future
        future.add_done_callback(lambda _: self._finish(handle))
        return handle

    def _finish(self, handle: int) -> None:
        with self._changed:
            self._finished.append(handle)
            self._changed.notify_all()

    def wait(self, handles: list[int], until: float) -> tuple[int, Future[Any]] | None:
        """The first of `handles` to finish (as recorded, when replaying) and its future,
        removed from the outstanding; None if none finished before `until` (monotonic)."""
        with self._changed:
            wanted = self._replayed(handles)
            while True:
                ready = [h for h in self._finished if h in handles]
                if wanted is not None:
                    ready = [h for h in ready if h == wanted]
                if ready or wanted == TIMED_OUT:
                    break
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            if not ready:
                self._on_delivered(TIMED_OUT)
                return None
            handle = ready[0]
            self._finished.remove(handle)
            future = self._futures.pop(handle)
        self._on_delivered(handle)
        return handle, future

    def _replayed(self, handles: list[int]) -> int | None:
        """The recorded delivery for this wait, if the record still matches the run."""
        if not self._schedule:
            return None
        wanted = self._schedule.pop(0)
        if wanted == TIMED_OUT or wanted in handles:
            return wanted
        log.warning(
            "the resumed run asked for other handles than its record holds (a noisy score?): "
            "going on live"
        )
        self._schedule.clear()
        return None
