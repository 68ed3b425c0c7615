"""`stop lmc run` and `stop lmc tasks`: the Little Man Computer from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from stop.cli import app, options
from stop.errors import BadInput

lmc_app = typer.Typer(no_args_is_help=True, help="The Little Man Computer (expert-iteration ISA).")
app.add_typer(lmc_app, name="lmc")


def _inputs(values: list[str]) -> list[list[int]]:
    parsed = []
    for value in values:
        try:
            parsed.append([int(v) for v in value.split(",")])
        except ValueError as exc:
            raise BadInput(f"--input {value!r}: give comma-separated integers, e.g. 3,5") from exc
    return parsed


@lmc_app.command("run")
def run_command(
    program: Path = typer.Argument(..., help="An LMC program file (one token per line)."),
    inputs: list[str] = typer.Option(..., "--input", help="Comma-separated integers; repeat."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run PROGRAM on each input: its output, or the kind of error."""
    from stop.errors import StopError
    from stop.lmc import parse, run

    try:
        text = program.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {program}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        parsed = parse(text)
    except StopError as exc:
        raise BadInput(f"{program}: {exc}") from exc
    rows: list[dict[str, Any]] = []
    for values in _inputs(inputs):
        outcome = run(parsed, values)
        rows.append(
            {
                "input": values,
                "kind": outcome.kind,
                "output": outcome.output,
                "steps": outcome.steps,
                "error": outcome.error,
            }
        )
    if as_json:
        options.print_json({"program": str(program), "results": rows})
        return
    table = Table("input", "output", "steps")
    for row in rows:
        result = (
            str(row["output"])
            if row["kind"] == "ok"
            else f"[red]{row['kind']} error[/]: {row['error']}"
        )
        table.add_row(",".join(map(str, row["input"])), result, str(row["steps"]))
    options.stdout_console().print(table)


@lmc_app.command("tasks")
def tasks_command(
    family: str = typer.Option(..., help="add or random."),
    n: int = typer.Option(4, min=2, help="add: the largest input length N (Add-2..Add-N)."),
    count: int = typer.Option(10, min=1, max=10_000, help="random: how many tasks."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same tasks."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """List tasks of a family with their training and test pairs."""
    from stop.lmc import add_tasks, random_tasks

    if family == "add":
        tasks = add_tasks(n, seed=seed)
    elif family == "random":
        tasks = random_tasks(count, seed=seed)
    else:
        raise BadInput(f"unknown task family {family!r}: use add or random")
    if as_json:
        options.print_json({"family": family, "tasks": [t.model_dump() for t in tasks]})
        return
    table = Table("task", "training pairs", "test pairs")
    for task in tasks:
        show = lambda pairs: "; ".join(f"{','.join(map(str, i))}->{o}" for i, o in pairs)  # noqa: E731
        table.add_row(task.name, show(task.train), show(task.test))
    options.stdout_console().print(table)
