"""`stop bench`: figures measured side by side in one run, each against its baseline."""

from __future__ import annotations

import logging
import time
from enum import Enum

import typer
from rich.table import Table

from stop.cli import app, options

log = logging.getLogger(__name__)


class Suite(str, Enum):
    sandbox = "sandbox"
    lmc = "lmc"
    llm = "llm"
    cache = "cache"
    improve = "improve"
    pipeline = "pipeline"  # a loopback server: no embedded model, about 10-30 s
    exit = "exit"  # needs the exit extra (torch); not part of "all"
    all = "all"


def _run(suite: Suite) -> list:
    from stop.bench import Figure

    if suite is Suite.sandbox:
        from stop.bench.sandbox import bench_sandbox

        return bench_sandbox()
    if suite is Suite.lmc:
        from stop.bench.lmc import bench_lmc

        return [Figure.model_validate(row) for row in bench_lmc()]
    if suite is Suite.exit:
        from stop.bench.exit import bench_exit

        return bench_exit()
    if suite is Suite.llm:
        from stop.bench.llm import bench_llm

        return bench_llm()
    if suite is Suite.pipeline:
        from stop.bench.pipeline import bench_pipeline

        return bench_pipeline()
    from stop.bench.improve import bench_cache, bench_improve

    return bench_cache() if suite is Suite.cache else bench_improve()


@app.command()
def bench(
    suite: Suite = typer.Argument(Suite.all, help="Which benchmarks to run."),
    as_json: bool = typer.Option(
        False, "--json", help="Print [{name, baseline, value, unit, ratio}]."
    ),
) -> None:
    """Measure stop against its baselines on this machine (ratio > 1: stop is better)."""
    from stop.cli.progress import Steps

    suites = (
        [s for s in Suite if s not in (Suite.all, Suite.exit)] if suite is Suite.all else [suite]
    )
    figures = []
    # A suite takes seconds to a minute (all of them 2-3 min on 2 cores): one step each.
    with Steps(len(suites), quiet=as_json) as steps:
        for each in suites:
            log.info("benchmark suite %s", each.value)
            steps.begin(f"{each.value}: measuring")
            started = time.monotonic()
            found = _run(each)
            figures += found
            names = ", ".join(f.name for f in found)
            steps.end(f"{each.value}: {names} ({time.monotonic() - started:.0f} s)")
    if as_json:
        options.print_json([f.model_dump() for f in figures])
        return
    table = Table("benchmark", "baseline", "stop", "unit", "ratio")
    for f in figures:
        table.add_row(f.name, f"{f.baseline:.4g}", f"{f.value:.4g}", f.unit, f"{f.ratio:.2f}x")
    options.stdout_console().print(table)
