"""`stop delete` and `stop clear-cache`: tidy a runs folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from stop.cli import app, err_console, options
from stop.errors import BadInput


@app.command()
def delete(
    run_ids: list[str] = typer.Argument(..., metavar="RUN_ID...", help="Runs to delete."),
    runs_dir: Path = options.RUNS_DIR,
) -> None:
    """Delete runs (their folders under --runs-dir); the response cache stays."""
    folders = []
    for run_id in run_ids:  # all checked before any is deleted
        folder = runs_dir / run_id
        if "/" in run_id or run_id.startswith(".") or not (folder / "config.json").is_file():
            raise BadInput(f"no run {run_id!r} in {runs_dir} (see stop runs)")
        folders.append(folder)
    for folder in folders:
        shutil.rmtree(folder)
        err_console.print(f"deleted {folder}", highlight=False, soft_wrap=True)


@app.command("clear-cache")
def clear_cache(runs_dir: Path = options.RUNS_DIR) -> None:
    """Forget the cached model responses (runs/.cache): the next runs ask the model anew."""
    cache = runs_dir / ".cache"
    if not cache.exists():
        err_console.print(f"no response cache in {runs_dir}", highlight=False)
        return
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    shutil.rmtree(cache)
    err_console.print(f"cleared {cache} ({size / 1e6:.1f} MB)", highlight=False, soft_wrap=True)
