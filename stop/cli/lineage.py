"""`stop runs`, `stop lineage`, `stop show`, `stop view`, `stop export`: look at saved runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from stop.cli import app, options
from stop.errors import BadInput
from stop.view.inert import inert

_RUNS_DIR = typer.Option(Path("runs"), help="Where runs are saved.")
# A pipe has no width: rich would take 80 columns and wrap paths and commands mid-line,
# so piped output is laid out this wide, which no line of a listing reaches.
_PIPE_WIDTH = 10_000


def _warn(text: str) -> None:
    """One line on stderr, however narrow the terminal."""
    line = Text.assemble(("warning:", "yellow"), " ", inert(text))
    Console(stderr=True).print(line, soft_wrap=True, highlight=False)


def _generation(value: str) -> int:
    if not value.isdigit():
        raise BadInput(f"generation must be a number, not {value!r}")
    return int(value)


@app.command("runs")
def runs_command(
    runs_dir: Path = _RUNS_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Table of runs: id, date, kind, model, rounds, best score, status."""
    from stop.view.runs import list_runs
    from stop.view.tables import runs_table

    views, skipped = list_runs(runs_dir)
    # What could not be read, and what of a listed run could not be shown: a line each,
    # on stderr, so the table (or the JSON) stays whole.
    for damaged in skipped:
        _warn(f"skipping {damaged.run_id}: {damaged.problem}")
    for v in views:
        if v.warnings:
            _warn(f"{v.id}: {'; '.join(v.warnings)}")
    if as_json:
        rows = [
            {
                "run_id": v.id,
                "run_dir": str(v.dir),
                "started": v.started.isoformat(timespec="seconds"),
                "kind": v.kind,
                "model": v.model,
                "generations": len(v.nodes),
                "rounds": v.rounds,
                "best_score": v.best.val if v.best else None,
                "status": v.status,
                "usd": v.usd,  # at the run's prices; 0 without
            }
            for v in views
        ]
        options.print_json(rows)
    elif not views:
        Console(stderr=True).print(f"No runs in {runs_dir}.")
    else:
        options.stdout_console().print(runs_table(views))


@app.command("lineage")
def lineage_command(
    run_id: str = typer.Argument(..., help="A run id (see `stop runs`)."),
    runs_dir: Path = _RUNS_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """The tree of generations: scores, change against the parent, kept or reverted."""
    from stop.view.render import lineage
    from stop.view.runs import open_run

    view = open_run(runs_dir, run_id)
    if as_json:
        out = view.model_dump(mode="json", exclude={"nodes", "id", "dir"})
        # The names every command's JSON uses for a run.
        out = {"run_id": view.id, "run_dir": str(view.dir), **out}
        # The run's spending (each generation's is in its own entry), 0 without prices.
        out |= {"usd": view.usd, "usd_cached": view.usd_cached}
        out["generations"] = [
            n.model_dump(mode="json") | {"delta": view.delta(n), "strategy": view.strategy(n)}
            for n in view.nodes
        ]
        options.print_json(out)
    else:
        options.stdout_console().print(lineage(view))


@app.command("show")
def show_command(
    run_id: str = typer.Argument(..., help="A run id."),
    gen: str = typer.Argument(
        ..., help="A generation (an improve run: a candidate; an exit run: an iteration)."
    ),
    diff: bool = typer.Option(False, "--diff", help="Show the change against its parent."),
    proposal: int | None = typer.Option(
        None,
        "--proposal",
        min=0,
        help="Self-improve: show this proposal of the generation's round instead (its "
        "number in the proposals table), kept or rejected.",
    ),
    runs_dir: Path = _RUNS_DIR,
) -> None:
    """A generation's improver source, syntax-highlighted, or its diff against its parent
    (an expert-iteration run's iteration: its solve rates); for a self-improve run, then
    why it was kept or reverted and the proposals of its round, with their statuses,
    errors and scores."""
    from stop.view.render import proposal_source, proposals, source
    from stop.view.runs import open_run

    view = open_run(runs_dir, run_id)
    node = view.node(_generation(gen))
    console = options.stdout_console()
    if proposal is not None:
        if view.kind != "self-improve":
            raise BadInput("--proposal is for self-improve runs: their rounds have proposals")
        console.print(proposal_source(view, node, proposal, diff=diff))
        return
    console.print(source(view, node, diff=diff))
    if view.kind == "self-improve" and (node.parent is not None or node.candidates):
        console.print(proposals(view, node))


@app.command("view")
def view_command(
    run_id: str = typer.Argument(..., help="A run id."),
    runs_dir: Path = _RUNS_DIR,
) -> None:
    """Interactive terminal UI: generations, code, diffs, candidates, model exchanges."""
    from stop.view.runs import open_run

    view = open_run(runs_dir, run_id)
    view.read_sources()  # a damaged run is reported before the screen changes
    from stop.view.app import LineageApp

    LineageApp(view).run()


@app.command("export")
def export_command(
    run_id: str = typer.Argument(..., help="A run id."),
    html: Path = typer.Option(..., "--html", help="The HTML file to write."),
    runs_dir: Path = _RUNS_DIR,
) -> None:
    """A single self-contained HTML page: lineage graph, scores, code and diffs."""
    from stop.store import write_atomic
    from stop.view.html import export_html
    from stop.view.runs import open_run

    view = open_run(runs_dir, run_id)
    if html.is_dir():
        raise BadInput(f"--html {html} is a directory; give a file name")
    if not html.parent.is_dir():
        raise BadInput(f"--html {html}: folder {html.parent} does not exist")
    page = export_html(view)
    try:
        write_atomic(html, page)  # a reader never sees half a page
    except OSError as exc:
        raise BadInput(f"cannot write {html}: {exc.strerror or exc}") from exc
    Console(stderr=True).print(f"Wrote {html} ({len(page) // 1024} KiB)", highlight=False)
