"""Renderings of an improve run: live progress from its events, the candidate table, the
best program."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from stop.records import (
    Calibrating,
    CandidateSaved,
    ImproveResult,
    ImproverStarted,
    ModelRequested,
    Rescoring,
    ScoreRequested,
)
from stop.view.inert import inert

_STATUS_STYLE = {
    "ok": "green",
    "wrong_answer": "yellow",
    "timeout": "magenta",
    "crash": "red",
    "syntax_error": "red",
    "no_code": "dim",
    "rejected": "yellow",
}


def progress_bar(console: Console) -> Progress:
    """The one progress bar of every command: the step, a bar, done of all, time so far."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


class ImproveProgress:
    """Turns the core loop's events into a progress bar over the utility budget."""

    def __init__(self, console: Console) -> None:
        self.progress = progress_bar(console)
        self.task = self.progress.add_task("checking the original program", total=None)

    def __enter__(self) -> ImproveProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:  # stopping one never started prints a blank line
            self.progress.stop()

    def __call__(self, event: Any) -> None:
        # Shown from the first event on: bad input, found before any, is one line alone.
        if not self.progress.live.is_started:
            self.progress.start()
        update = self.progress.update
        if isinstance(event, Calibrating):
            update(self.task, description=f"calibrating the {event.utility} utility")
        elif isinstance(event, ImproverStarted):
            update(self.task, description="starting the improver", total=event.budget, completed=0)
        elif isinstance(event, ModelRequested):
            update(self.task, description=f"asking the model for {event.n} rewrite(s)")
        elif isinstance(event, ScoreRequested):
            update(self.task, description="scoring a candidate in the sandbox")
        elif isinstance(event, CandidateSaved) and event.path is not None:
            self.progress.advance(self.task)
        elif isinstance(event, Rescoring):
            update(self.task, description="re-scoring the original and the best")


def candidate_table(result: ImproveResult) -> Table:
    table = Table(title="Candidates", title_justify="left")
    for column in ("#", "origin", "status", "score", "time", "detail"):
        table.add_column(column, justify="right" if column in ("#", "score", "time") else "left")
    for c in result.candidates:
        e = c.evaluation
        table.add_row(
            str(c.index),
            c.origin,
            f"[{_STATUS_STYLE[e.status]}]{e.status}[/]",  # spelled as in --json
            f"{e.score:.4g}",
            f"{e.seconds:.2f}s" if c.path else "",
            Text(inert((e.detail or "")[:60])),  # a Text: no markup read from it either
        )
    return table


def summary(result: ImproveResult) -> Group:
    parts: list[Any] = [candidate_table(result)]
    if result.usage.failed:
        parts.append(
            f"[yellow]The language model failed on {result.usage.failed} of "
            f"{result.usage.calls} samples[/] (each failure is logged in llm.jsonl)."
        )
    if result.improver.status != "ok":
        parts.append(
            Text.assemble(
                (f"The improver failed ({result.improver.status}):", "red"),
                f" {inert(result.improver.error)}",
            )
        )
    if result.improved:
        parts.append(
            Panel(
                Syntax(inert(result.diff), "diff", word_wrap=True),
                title="Best program vs. the original",
                expand=False,  # as wide as the diff: piped output has no width to fill
            )
        )
        gain = (
            f"speedup {result.speedup:.4g}x"
            if result.speedup is not None
            else f"score {result.best_score:.4g}"
        )
        parts.append(
            f"[bold green]Improved[/]: {gain} "
            f"(score {result.baseline_score:.4g} -> {result.best_score:.4g})"
        )
    else:
        parts.append(
            f"[yellow]No candidate beat the original[/] (score {result.baseline_score:.4g})."
        )
    parts.append(f"Best program: {result.best_path}\nRun saved in: {result.run_dir}")
    return Group(*parts)
