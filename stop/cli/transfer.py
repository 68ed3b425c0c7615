"""`stop transfer`: a saved improver on tasks it was not optimized on."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from stop.cli import app


@app.command()
def transfer(
    improver: str = typer.Option(..., help="<run-id>:<gen>, a .py improver file, or seed."),
    tasks: str = typer.Option(..., help="Comma-separated tasks, e.g. maxcut,parity."),
    trials: int = typer.Option(3, min=1, help="Runs of each improver on each task."),
    backend: str = typer.Option(None, help="local, openai or scripted."),
    model: str = typer.Option(None, help="Model name (openai) or GGUF file (local)."),
    base_url: str = typer.Option(None, help="OpenAI-compatible server URL."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Variable holding the API key."),
    script: Path = typer.Option(None, help="Scripted backend: JSON script."),
    seed: int = typer.Option(0, help="Sampling seed."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where runs (and the cache) live."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Mean and 95% interval per task: seed solution, seed improver, this improver."""
    from stop.cli.self_improve import _LOCAL, _SERVER
    from stop.improver import load_improver
    from stop.llm import ModelSettings, build_backend, choose_backend
    from stop.llm.cache import ResponseCache
    from stop.meta import BudgetPerTest
    from stop.task import load_task
    from stop.transfer import transfer as run_transfer

    specs = [load_task(t.strip()) for t in tasks.split(",") if t.strip()]
    source = load_improver(improver, runs_dir)
    seed_source = load_improver("seed")
    kind = choose_backend(backend, base_url=base_url, model=model, script=script)
    d = _LOCAL if kind == "local" else _SERVER
    settings = ModelSettings(
        backend=kind, model=model, base_url=base_url, api_key_env=api_key_env, script=script
    )
    budget = BudgetPerTest(
        model_calls=d["test_calls"],
        max_responses_per_call=d["samples"],
        max_tokens=d["max_tokens"],
        task_evaluations=d["task_evaluations"],
    )
    cache = ResponseCache(runs_dir / ".cache" / "responses.sqlite3")
    try:
        rows = run_transfer(
            source, seed_source, specs, build_backend(settings),
            trials=trials, budget=budget, cache=cache, seed=seed,
        )  # fmt: skip
    finally:
        cache.close()
    if as_json:
        typer.echo(json.dumps({"improver": improver, "rows": [r.model_dump() for r in rows]}))
        return
    table = Table(title=f"Transfer of {improver} (test split, mean [95% interval])")
    for column in ("task", "seed solution", "seed improver", "improver"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in rows:
        cells = [r.seed_solution, r.seed_improver, r.improver]
        table.add_row(r.task, *(f"{c.mean:.3f} [{c.low:.3f}, {c.high:.3f}]" for c in cells))
    Console().print(table)
