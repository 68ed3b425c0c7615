"""Progress of the long commands that write no run (`stop bench`, `transfer`, `compare`,
`bench-mutators`), on stderr: stdout is the command's result, one JSON document with
--json, and with --json nothing is shown at all.

On a terminal, a live bar (the step running, steps done of all, time so far) with a
line above it per finished step; elsewhere (a CI log, a pipe) no bar can redraw, so the
same lines, one per step begun and one per step finished.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.markup import escape

from stop.records import MetaTestFinished, MetaTestStarted
from stop.view.improve import progress_bar


class Steps:
    """`begin(text)` when a step starts, `end(text)` when one finishes; thread-safe, as
    the meta-utility's tests run two at a time and report from their threads."""

    def __init__(self, total: int | None, *, quiet: bool, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.live = not quiet and self.console.is_terminal
        self._lock = threading.Lock()
        self._done = 0
        self.total = total
        self.progress = progress_bar(self.console)
        self.task = self.progress.add_task("starting", total=total)

    def __enter__(self) -> Steps:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def begin(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if self.live:
                # A name in the text (a file, a model) is not markup.
                self.progress.update(self.task, description=escape(text))
            else:
                self.console.print(f"{self._count()} {text}", highlight=False, markup=False)

    def end(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self._done += 1
            self.progress.advance(self.task)
            self.console.print(f"{self._count()} {text}", highlight=False, markup=False)

    def _count(self) -> str:
        return f"[{self._done}/{self.total}]" if self.total else f"[{self._done}]"


class TrialSteps:
    """A run's watcher for `stop compare` and `stop transfer`: one step per trial (a
    meta-utility test), named by the improver and the task."""

    def __init__(self, steps: Steps, names: dict[str, str] | None = None) -> None:
        self.steps = steps
        self.names = names or {}  # improver key -> what the table calls it

    def __call__(self, event: Any) -> None:
        if not isinstance(event, MetaTestStarted | MetaTestFinished):
            return
        name = self.names.get(event.improver or "", event.improver)
        what = f"{name} on {event.task}: trial {event.index + 1}/{event.tests}"
        if isinstance(event, MetaTestStarted):
            self.steps.begin(f"{what} started")
        else:
            outcome = f"test {event.test:.3f}" if event.status == "ok" else event.status
            self.steps.end(f"{what}: {outcome} ({event.seconds:.0f} s)")
