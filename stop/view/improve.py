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

from stop.llm.prices import spending
from stop.records import (
    Calibrating,
    CandidateSaved,
    Evaluation,
    ImproveResult,
    ImproverStarted,
    ModelRequested,
    Rescoring,
    ScoreRequested,
    Started,
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

    def __init__(self, console: Console, preamble: str | None = None) -> None:
        self.progress = progress_bar(console)
        self.task = self.progress.add_task("checking the original program", total=None)
        self.preamble = preamble  # printed once the run has begun: its input was good

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
        if isinstance(event, Started) and self.preamble:
            self.progress.console.print(self.preamble, highlight=False, soft_wrap=True)
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
            shown_score(e),
            f"{e.seconds:.2f}s" if c.path else "",
            Text(inert((e.detail or "")[:60])),  # a Text: no markup read from it either
        )
    provisional = sum(c.evaluation.provisional for c in result.candidates)
    if provisional:
        table.caption = (
            f"provisional: {provisional} timing(s) taken while the model generated on the "
            "same cores; the improver ranked by them, the result below is re-scored"
        )
    return table


def shown_score(e: Evaluation) -> str:
    """A candidate's score cell: never a provisional timing's number; a reused
    evaluation says so."""
    if e.provisional:
        return "[dim]provisional[/]"
    return f"{e.score:.4g}" + {"run": " (same)", "cache": " (cached)", None: ""}[e.reused]


def summary(result: ImproveResult) -> Group:
    parts: list[Any] = [candidate_table(result)]
    if result.usage.failed:
        parts.append(
            f"[yellow]The language model failed on {result.usage.failed} of "
            f"{result.usage.calls} samples[/] (each failure is logged in llm.jsonl)."
        )
    spent = spending(result.usage.usd, result.usage.usd_cached)
    if spent is not None:  # a run without prices (the local model's) shows no money
        parts.append(f"Model spending: {spent}")
    if result.money_cap_reached:
        parts.append(
            f"[yellow]The money cap ended the model's requests[/] after {result.usage.calls} "
            "completion(s): the next could have cost more than was left."
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
