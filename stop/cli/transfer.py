"""`stop transfer`, `stop compare` and `stop bench-mutators`: improvers and models side by
side under the same model and budget."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from stop.cli import app, options
from stop.errors import BadInput

if TYPE_CHECKING:
    from stop.records import ModelSettings, Money


def _trials(
    improvers: dict[str, str],
    tasks: str,
    trials: int,
    settings: ModelSettings,
    runs_dir: Path,
    seed: int,
    transfer: bool,
    quiet: bool,
    money: Money | None = None,
) -> tuple[list, float]:
    """The rows, and what the model calls cost (USD at the prices; 0 without)."""
    from stop.analysis.transfer import compare
    from stop.analysis.transfer import transfer as run_transfer
    from stop.cli.progress import Steps, TrialSteps
    from stop.defaults import profile
    from stop.scoring.task import load_task
    from stop.wiring import Run

    specs = [load_task(t.strip()) for t in tasks.split(",") if t.strip()]
    if not specs:
        raise BadInput("--tasks names no task")
    budget = profile(settings.backend).test
    # transfer: the seed solution's column is measured by trials of its own.
    columns = len(improvers) + 1 if transfer else len(improvers)
    steps = Steps(len(specs) * columns * trials, quiet=quiet)
    watcher = TrialSteps(steps, {"seed": "seed improver"} if transfer else None)
    with steps, Run(runs_dir, settings, watchers=(watcher,), money=money) as run:
        if transfer:
            rows: list = run_transfer(
                improvers["improver"],
                improvers["seed"],
                specs,
                run,
                trials=trials,
                budget=budget,
                seed=seed,
            )
        else:
            rows = compare(improvers, specs, run, trials=trials, budget=budget, seed=seed)
        return rows, run.purse.spent if run.purse else 0.0


def _cell(i: Any) -> str:
    if i.low is None or i.high is None:
        return f"{i.mean:.3f} (n={i.n})"
    return f"{i.mean:.3f} [{i.low:.3f}, {i.high:.3f}]"


NO_INTERVAL = "n=1: one trial, so no interval to report (--trials 2 or more gives one)"


def _title(what: str, trials: int) -> str:
    return f"{what} (test split, {trials} trial{'s' * (trials != 1)} each, mean [95% interval])"


@app.command()
def transfer(
    improver: str = typer.Option(..., help="<run-id>:<gen>, a .py improver file, or seed."),
    tasks: str = typer.Option(..., help="Comma-separated tasks, e.g. maxcut,parity."),
    trials: int = typer.Option(3, min=1, help="Runs of each improver on each task."),
    backend: str = options.BACKEND,
    model: str = options.MODEL,
    base_url: str = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    script: Path = options.SCRIPT,
    backend_option: list[str] = options.BACKEND_OPTION,
    seed: int = typer.Option(0, help="Sampling seed."),
    concurrency: int = options.CONCURRENCY,
    max_usd: float = options.MAX_USD,
    price_input: float = options.PRICE_INPUT,
    price_output: float = options.PRICE_OUTPUT,
    prices: Path = options.PRICES,
    runs_dir: Path = options.RUNS_DIR,
    as_json: bool = options.JSON,
) -> None:
    """Mean and 95% interval per task over --trials runs, each column measured alike:
    the seed solution (an improver that changes nothing), the seed improver, this one."""
    from stop.llm.prices import usd
    from stop.sources import load_improver

    improvers = {"seed": load_improver("seed"), "improver": load_improver(improver, runs_dir)}
    settings = options.model_settings(
        backend, model, base_url, api_key_env, script, backend_option, concurrency
    )
    money = options.money(settings, max_usd, price_input, price_output, prices)
    rows, spent = _trials(improvers, tasks, trials, settings, runs_dir, seed, True, as_json, money)
    if as_json:
        out = {"improver": improver, "rows": [r.model_dump() for r in rows], "usd": spent}
        options.print_json(out)
        return
    table = Table(title=_title(f"Transfer of {improver}", trials))
    notes = [NO_INTERVAL] if trials == 1 else []
    if spent:
        notes.append(f"model spending: {usd(spent)}")
    table.caption = "; ".join(notes) or None
    for column in ("task", "seed solution", "seed improver", "improver"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for r in rows:
        table.add_row(r.task, *(_cell(c) for c in (r.seed_solution, r.seed_improver, r.improver)))
    options.stdout_console().print(table)


@app.command()
def compare(
    improvers: str = typer.Option(
        "seed,refine,map_elites", help="Comma-separated: built-in names, .py files, <run>:<gen>."
    ),
    tasks: str = typer.Option("lpn", help="Comma-separated tasks."),
    trials: int = typer.Option(3, min=1, help="Runs of each improver on each task."),
    backend: str = options.BACKEND,
    model: str = options.MODEL,
    base_url: str = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    script: Path = options.SCRIPT,
    backend_option: list[str] = options.BACKEND_OPTION,
    seed: int = typer.Option(0, help="Sampling seed."),
    runs_dir: Path = options.RUNS_DIR,
    as_json: bool = options.JSON,
) -> None:
    """Improvers side by side, same model and budget: final utility (test split, mean and
    95% interval), model calls and wall time per task."""
    from stop.sources import load_improver

    names = [name.strip() for name in improvers.split(",") if name.strip()]
    if not names:
        raise BadInput("--improvers names no improver")
    sources = {name: load_improver(name, runs_dir) for name in names}
    settings = options.model_settings(backend, model, base_url, api_key_env, script, backend_option)
    rows, _ = _trials(sources, tasks, trials, settings, runs_dir, seed, False, as_json)
    if as_json:
        options.print_json([r.model_dump() for r in rows])
        return
    table = Table(title=_title("Improvers compared", trials))
    table.caption = NO_INTERVAL if trials == 1 else None
    for column in (
        "task",
        "improver",
        "utility [95% interval]",
        "failed",
        "calls",
        "tokens",
        "time",
        "edits ok/fallback/failed",
        "rerank saved",
    ):
        table.add_column(column, justify="left" if column in ("task", "improver") else "right")
    for r in rows:
        edits = f"{r.edits['applied']}/{r.edits['fell_back']}/{r.edits['failed']}"
        table.add_row(
            r.task,
            r.improver,
            _cell(r.score),
            str(r.failed),
            str(r.calls),
            str(r.tokens),
            f"{r.seconds:.0f}s",
            edits,
            str(r.rerank_saved),
        )
    options.stdout_console().print(table)


@app.command("bench-mutators")
def bench_mutators(
    models: list[str] = typer.Option(
        None, "--model", help="Model name (openai) or GGUF file (local); repeat for several."
    ),
    backend: str = options.BACKEND,
    base_url: str = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    script: Path = options.SCRIPT,
    backend_option: list[str] = options.BACKEND_OPTION,
    samples: int = typer.Option(4, min=1, help="Mutations per target and mode."),
    targets: str = typer.Option(None, help="Comma-separated toys (default: all)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    runs_dir: Path = options.RUNS_DIR,
    as_json: bool = options.JSON,
) -> None:
    """Per model: rates of valid, correct and improving mutations on toy targets, as whole
    rewrites and as edits, and tokens per improvement."""
    from stop.bench.mutators import MODES, TOYS, bench_model
    from stop.cli.progress import Steps
    from stop.defaults import profile
    from stop.records import Budget
    from stop.wiring import Run

    toys = [t.strip() for t in targets.split(",")] if targets else list(TOYS)
    unknown = [t for t in toys if t not in TOYS]
    if unknown:
        raise BadInput(f"unknown target {unknown[0]!r}; toys: {', '.join(TOYS)}")
    rows = []
    names: list[str | None] = list(models) if models else [None]
    with Steps(len(names) * len(MODES) * len(toys) * samples, quiet=as_json) as steps:
        for name in names:
            settings = options.model_settings(
                backend, name, base_url, api_key_env, script, backend_option
            )
            budget = Budget(
                model_calls=samples * len(toys) * 2,
                max_responses_per_call=samples,
                max_tokens=profile(settings.backend).improve.max_tokens,
                evaluations=0,
            )
            with Run(runs_dir, settings) as run, tempfile.TemporaryDirectory() as workdir:
                label = name or settings.backend
                model = run.model(budget, seed)
                rows += bench_model(label, run, model, samples, toys, Path(workdir), steps)
    if as_json:
        out = [
            r.model_dump()
            | {"rates": r.rates(), "tokens_per_improvement": r.tokens_per_improvement}
            for r in rows
        ]
        options.print_json(out)
        return
    table = Table(title=f"Mutation quality ({samples} mutations per target and mode)")
    for column in (
        "model",
        "mode",
        "target",
        "valid",
        "correct",
        "improving",
        "edits applied",
        "tokens / improvement",
    ):
        table.add_column(
            column, justify="left" if column in ("model", "mode", "target") else "right"
        )
    for r in rows:
        rates = r.rates()
        per = r.tokens_per_improvement
        table.add_row(
            r.model,
            r.mode,
            f"[bold]{r.target}[/]" if r.target == "all" else r.target,
            *(f"{rates[k]:.0%}" for k in ("valid", "correct", "improving")),
            f"{r.edits_applied}/{r.mutations}" if r.mode == "edit" else "-",
            "-" if per is None else f"{per:.0f}",
        )
    options.stdout_console().print(table)
