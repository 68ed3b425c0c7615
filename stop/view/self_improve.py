"""Renderings of a self-improve run: progress lines from its events, the generations."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from stop.llm.prices import spending, usd
from stop.records import (
    GenerationSaved,
    MetaTestFinished,
    MetaTestStarted,
    RoundStarted,
    SelfImproveConfig,
    SelfImproveResult,
    Usage,
    trim,
)
from stop.view.inert import inert

WHY_CHARS = 100  # of a reverted generation's reason in the table; `stop lineage` has it all


class SelfImproveProgress:
    """A line per round (with the time left, from the rounds so far) and per generation."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()

    def __call__(self, event: Any) -> None:
        if isinstance(event, RoundStarted):
            eta = ""
            if event.round:
                per_round = (time.monotonic() - self.started) / (event.round + 1)
                eta = f", about {per_round * (event.rounds + 1 - event.round) / 60:.1f} min left"
            self.console.print(f"[bold]Round {event.round}/{event.rounds}[/]{eta}", highlight=False)
        elif isinstance(event, GenerationSaved):
            verdict = "kept" if event.kept else "reverted"
            self.console.print(
                f"  generation {event.gen}: val {event.val:.3f}, test {event.test:.3f}, "
                f"{verdict} ({event.seconds:.0f} s)",
                highlight=False,
            )
        elif isinstance(event, MetaTestStarted | MetaTestFinished):
            # The tests are most of a round's time: the proposer's and the host's scoring.
            what = f"    meta-utility test {event.index + 1}/{event.tests} ({event.task})"
            if isinstance(event, MetaTestStarted):
                self.console.print(f"{what} started", style="dim", highlight=False)
            else:
                ok = event.status == "ok"
                outcome = f"val {event.val:.3f}, test {event.test:.3f}" if ok else event.status
                line = f"{what}: {outcome} ({event.seconds:.0f} s)"
                self.console.print(line, style="dim", highlight=False)


def generations_summary(result: SelfImproveResult, config: SelfImproveConfig) -> Group:
    table = Table(title="Generations", title_justify="left")
    # A USD column only where the run was priced: a local run's table stays as it was.
    priced = any(g.usage.usd > 0 for g in result.generations)
    columns = ["gen", "parent", "val", "test", "spread", "kept", "calls"]
    columns += (["usd"] if priced else []) + ["time", "audit", "why"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("audit", "why") else "right")
    for g in result.generations:
        audit = ", ".join(sorted({f.kind for f in g.audit if f.kind != "disables_sandbox"}))
        # A reverted round's reason quotes the proposals' errors: untrusted text.
        why = Text(inert(trim(g.reason, WHY_CHARS)) if g.reason and not g.kept else "")
        table.add_row(
            str(g.gen),
            "" if g.parent is None else str(g.parent),
            f"{g.meta_utility_val:.3f}",
            f"{g.meta_utility_test:.3f}",
            f"{g.meta.spread:.3f}",
            "[green]kept[/]" if g.kept else "[dim]reverted[/]",
            str(g.usage.calls),
            *([usd(g.usage.usd)] if priced else []),
            f"{g.seconds:.0f}s",
            ("[red]tried to switch the sandbox off[/] " if g.circumvented else "") + audit,
            why,
        )
    parts: list[Any] = [table]
    total = sum((g.usage for g in result.generations), Usage())
    spent = spending(total.usd, total.usd_cached)
    if spent is not None:
        parts.append(f"Model spending: {spent}")
    if result.money_cap_reached:
        parts.append("[yellow]The money cap ended the model's requests[/] before the budgets did.")
    rate = result.circumvention_rate
    if rate or "sandbox_probe" in config.tasks:
        parts.append(
            f"Circumvention rate: {rate:.0%} of proposed improvers tried to switch the sandbox off"
        )
    parts.append(
        f"Best improver: generation {result.best_generation} ({result.best_path})\n"
        f"Use it: stop improve --improver {result.run_id}:{result.best_generation} --target ...\n"
        f"Run saved in: {result.run_dir}"
    )
    return Group(*parts)
