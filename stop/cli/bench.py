"""`stop bench`: figures measured side by side in one run, each against its baseline."""

from __future__ import annotations

import json
from enum import Enum

import typer
from rich.console import Console
from rich.table import Table

from stop.cli import app


class Suite(str, Enum):
    lmc = "lmc"
    all = "all"


@app.command()
def bench(
    suite: Suite = typer.Argument(Suite.all, help="Which benchmarks to run."),
    as_json: bool = typer.Option(
        False, "--json", help="Print [{name, baseline, value, unit, ratio}]."
    ),
) -> None:
    """Measure stop against its baselines on this machine (ratio > 1: stop is better)."""
    from stop.lmc.bench import bench_lmc

    rows = bench_lmc()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("benchmark", "baseline", "stop", "unit", "ratio")
    for row in rows:
        table.add_row(
            row["name"], f"{row['baseline']:.4g}", f"{row['value']:.4g}", row["unit"],
            f"{row['ratio']:.1f}x",
        )  # fmt: skip
    Console().print(table)
