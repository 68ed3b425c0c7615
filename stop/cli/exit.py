"""`stop exit train|eval|plot`: expert iteration on the Little Man Computer. A training
run is a run folder like every other command's (stop/exit/folder.py): `stop runs`,
`stop lineage` and `stop view` show it.

torch is imported inside the commands, so `stop --help` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from stop.cli import app, options
from stop.errors import BadInput

exit_app = typer.Typer(no_args_is_help=True, help="Expert iteration (ExIt) on the LMC.")
app.add_typer(exit_app, name="exit")
err_console = Console(stderr=True)
_RUNS_DIR = typer.Option(Path("runs"), help="Where runs are saved.")


def _run_path(path: Path, runs_dir: Path) -> Path:
    """A path as given, or, where nothing is there, the run of that id in `runs_dir`."""
    if not path.exists() and len(path.parts) == 1 and (runs_dir / path).is_dir():
        return runs_dir / path
    return path


def _setup_torch(threads: int | None) -> None:
    import torch

    if threads is not None:
        if threads < 1:
            raise BadInput(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _flops(record: dict | None) -> dict:
    if record is None:
        return {"search": 0, "train": 0, "total": 0}
    return {
        "search": record["flops_search"],
        "train": record["flops_train"],
        "total": record["flops_total"],
    }


@exit_app.command("train")
def train_command(
    family: str = typer.Option("add", help="Task family: add or random."),
    max_n: int = typer.Option(4, "--max-n", help="add: tasks add-2 .. add-N."),
    count: int = typer.Option(20, help="random: how many tasks."),
    task_seed: int = typer.Option(0, "--task-seed", help="Seed of the task family."),
    search: str = typer.Option("sf", help="sf (sampling & filtering) or mcts (Gumbel MCTS)."),
    rollouts: int = typer.Option(256, help="sf: samples per task; mcts: episodes per task."),
    simulations: int = typer.Option(32, help="mcts: simulations per step."),
    temperature: float = typer.Option(1.2, help="sf: sampling temperature."),
    explore: float = typer.Option(
        0.0, help="sf: uniform share of the sampling mixture for tasks not yet solved."
    ),
    iterations: int = typer.Option(40, help="Expert-iteration rounds (total, across resumes)."),
    train_steps: int = typer.Option(20, "--train-steps", help="Training steps per iteration."),
    batch_size: int = typer.Option(32, "--batch-size", help="Policy sequences per step."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate."),
    preset: str = typer.Option("cpu", help="Model preset: tiny, cpu or paper."),
    curriculum: bool = typer.Option(True, help="add: Add-2 first, then one more input."),
    grammar: bool = typer.Option(True, help="Allow only opcode/operand alternation."),
    max_len: int | None = typer.Option(None, "--max-len", help="Program length limit."),
    keep_going: bool = typer.Option(False, "--keep-going", help="Go on once all solved."),
    seed: int = typer.Option(0, help="Seed of the model, search and replay."),
    out: Path | None = typer.Option(
        None, help="Run directory (default: a new runs/<time>-exit-<hex>/ in --runs-dir)."
    ),
    resume: bool = typer.Option(
        False, help="Resume the run in --out (a directory, or a run id in --runs-dir)."
    ),
    runs_dir: Path = _RUNS_DIR,
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train a model from scratch by expert iteration; checkpoint after every iteration."""
    from stop.exit.config import make_config

    config = make_config(
        family=family,
        max_n=max_n,
        count=count,
        task_seed=task_seed,
        search=search,
        rollouts=rollouts,
        simulations=simulations,
        temperature=temperature,
        explore=explore,
        iterations=iterations,
        train_steps=train_steps,
        batch_size=batch_size,
        lr=lr,
        preset=preset,
        curriculum=curriculum,
        grammar=grammar,
        max_len=max_len,
        stop_when_solved=not keep_going,
        seed=seed,
    )
    if resume and out is None:
        raise BadInput("--resume needs --out: the run to resume (runs/<run-id> or its id)")
    _setup_torch(threads)
    from stop.exit.folder import create, reopen
    from stop.exit.loop import run_exit

    if resume and out is not None:
        store = reopen(_run_path(out, runs_dir))
    else:
        store = create(config, runs_dir, out)
    started = time.perf_counter()

    def progress(record: dict) -> None:
        rate = 100 * record["solved_fraction"]
        err_console.print(
            f"iteration {record['iteration']:>3}  solved {rate:5.1f}%  "
            f"flops {record['flops_total']:.2e}  mean reward {record['mean_reward']:+.2f}  "
            f"loss {record['loss']:.3f}  [{time.perf_counter() - started:.0f}s]",
            highlight=False,
        )

    try:
        with err_console.status(f"expert iteration, run {store.id}…"):
            state = run_exit(config, store, resume=resume, on_iteration=progress)
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted: resume with the same options and --resume --out {store.dir}",
            highlight=False,
        )
        raise
    last = state.history[-1] if state.history else None
    result = {
        "run_id": store.id,
        "run_dir": str(store.dir),
        "iterations": state.iteration,
        "solve_rates": last["solve_rates"] if last else {},
        "flops": _flops(last),
        "seconds": time.perf_counter() - started,
    }
    _print_result(result, as_json)


@exit_app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint file, run directory or run id."),
    family: str | None = typer.Option(None, help="add or random (default: the run's)."),
    max_n: int | None = typer.Option(None, "--max-n", help="add: tasks add-2 .. add-N."),
    count: int | None = typer.Option(None, help="random: how many tasks."),
    runs_dir: Path = _RUNS_DIR,
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Greedy-decode one program per task and score it on the task's test pairs."""
    _setup_torch(threads)
    from stop.exit.config import make_config
    from stop.exit.loop import evaluate, restore_state

    state = restore_state(_run_path(checkpoint, runs_dir))
    fields = state.config.model_dump(exclude={"format_version"})
    for key, value in (("family", family), ("max_n", max_n), ("count", count)):
        if value is not None:
            fields[key] = value
    tasks = make_config(**fields).eval_tasks()
    rates = evaluate(state, tasks)
    last = state.history[-1] if state.history else None
    _print_result(
        {"checkpoint": str(checkpoint), "solve_rates": rates, "flops": _flops(last)}, as_json
    )


@exit_app.command("plot")
def plot_command(
    runs: list[Path] = typer.Argument(..., help="Run directories, run ids or checkpoints."),
    png: Path | None = typer.Option(None, help="Write a PNG chart here."),
    terminal: bool = typer.Option(True, help="Draw a terminal chart (plotext)."),
    runs_dir: Path = _RUNS_DIR,
) -> None:
    """% of test tasks solved against total FLOPs, one line per run."""
    from stop.exit.plot import load_curves, plot_png, plot_terminal

    curves = load_curves([_run_path(run, runs_dir) for run in runs])
    if png is not None:
        plot_png(curves, png)
        err_console.print(f"wrote {png}")
    if terminal:
        typer.echo(plot_terminal(curves))


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        options.print_json(result)
        return
    for name, rate in result["solve_rates"].items():
        mark = "solved" if rate == 1.0 else ""
        typer.echo(f"{name:<24} {100 * rate:5.1f}%  {mark}")
    flops = result["flops"]
    parts = (f"{key} {flops[key]:.3e}" for key in ("search", "train", "total"))
    typer.echo("FLOPs: " + "  ".join(parts))
