"""`stop self-improve` and `stop transfer`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from stop.cli import app
from stop.cli.improve import EXECUTOR_OPTION, RAY_ADDRESS_OPTION, ExecutorName
from stop.errors import BadInput

# Defaults per kind of model: the embedded one is slow (about 25 tokens/s on 2 cores) and
# weak, a server model is neither.
_LOCAL = {
    "tests": 2, "samples": 2, "max_tokens": 256, "round_calls": 2, "meta_evaluations": 3,
    "test_calls": 2, "task_evaluations": 3,
}  # fmt: skip
_SERVER = {
    "tests": 3, "samples": 4, "max_tokens": 2048, "round_calls": 4, "meta_evaluations": 5,
    "test_calls": 4, "task_evaluations": 5,
}  # fmt: skip
_LOCAL_TOKENS_PER_S = 25.0  # generation; prompts are read about ten times faster
_PROMPT_TOKENS = 900  # a typical improver prompt


def estimate(config: Any) -> dict[str, float]:
    """Upper bounds on what a run spends: every budget used in full, nothing cached."""
    per_meta = config.tests * config.test_budget.model_calls
    calls = per_meta + config.rounds * (
        config.round_model_calls + (config.meta_evaluations + 1) * per_meta
    )
    tokens = calls * (config.max_tokens + _PROMPT_TOKENS)
    seconds = calls * (config.max_tokens / _LOCAL_TOKENS_PER_S + _PROMPT_TOKENS / 250)
    return {"calls": calls, "tokens": tokens, "local_seconds": seconds}


@app.command("self-improve")
def self_improve_command(
    rounds: int = typer.Option(None, help="Self-improvement rounds (default 5)."),
    tasks: str = typer.Option(None, help="Comma-separated downstream tasks (default lpn)."),
    tests: int = typer.Option(None, help="Meta-utility tests per evaluation (k)."),
    improver: str = typer.Option(None, help="Generation 0: seed, a .py file or <run-id>:<gen>."),
    no_iterate: bool = typer.Option(
        False, "--no-iterate", help="Non-iterative: the seed improver does all the improving."
    ),
    resume: str = typer.Option(None, help="Continue run <run-id> where it stopped."),
    backend: str = typer.Option(None, help="local, openai or scripted."),
    model: str = typer.Option(None, help="Model name (openai) or GGUF file (local)."),
    base_url: str = typer.Option(None, help="OpenAI-compatible server URL."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Variable holding the API key."),
    script: Path = typer.Option(None, help="Scripted backend: JSON script."),
    seed: int = typer.Option(None, help="Sampling seed."),
    runs_dir: Path = typer.Option(Path("runs"), help="Where runs are saved."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    executor: ExecutorName = EXECUTOR_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
) -> None:
    """Apply the improver to its own source, scored by the meta-utility, round after round."""
    from stop.llm import ModelSettings, choose_backend
    from stop.sandbox import executor as executors
    from stop.sandbox.executor import open_executor
    from stop.scoring.meta import BudgetPerTest
    from stop.self_improve import (
        SelfImproveConfig,
        circumvention_rate,
        current,
        load_config,
        self_improve,
    )

    given = {
        "rounds": rounds, "tasks": tasks, "tests": tests, "improver": improver, "seed": seed,
        "backend": backend, "model": model, "base_url": base_url, "script": script,
    }  # fmt: skip
    if resume is not None:
        _check_resume(load_config(runs_dir, resume), given, no_iterate)
        config = load_config(runs_dir, resume)
    else:
        kind = choose_backend(backend, base_url=base_url, model=model, script=script)
        d = _LOCAL if kind == "local" else _SERVER
        if rounds is not None and rounds < 1:
            raise BadInput("--rounds must be at least 1")
        config = SelfImproveConfig(
            tasks=[t.strip() for t in (tasks or "lpn").split(",") if t.strip()],
            rounds=5 if rounds is None else rounds,
            tests=tests or d["tests"],
            iterative=not no_iterate,
            improver=improver or "seed",
            model=ModelSettings(
                backend=kind, model=model, base_url=base_url, api_key_env=api_key_env, script=script
            ),
            max_responses_per_call=d["samples"],
            max_tokens=d["max_tokens"],
            round_model_calls=d["round_calls"],
            meta_evaluations=d["meta_evaluations"],
            test_budget=BudgetPerTest(
                model_calls=d["test_calls"],
                max_responses_per_call=d["samples"],
                max_tokens=d["max_tokens"],
                task_evaluations=d["task_evaluations"],
            ),
            seed=seed or 0,
            runs_dir=runs_dir,
        )
    # Connected before anything is written or printed: an unreachable cluster is one line
    # on stderr and no run directory.
    chosen = open_executor(executor.value, ray_address)
    err = Console(stderr=True)
    bound = estimate(config)
    line = f"Budget: at most {bound['calls']:.0f} model calls, about {bound['tokens']:.0f} tokens"
    if config.model.backend == "local":
        line += f"; on the embedded model at most about {bound['local_seconds'] / 60:.0f} min"
    err.print(line + " (cached answers cost nothing).", highlight=False)
    started = time.monotonic()

    def progress(kind: str, data: dict[str, Any]) -> None:
        if kind == "round":
            done = data["round"]
            eta = ""
            if done:
                per_round = (time.monotonic() - started) / (done + 1)
                eta = f", about {per_round * (data['rounds'] + 1 - done) / 60:.1f} min left"
            err.print(f"[bold]Round {done}/{data['rounds']}[/]{eta}", highlight=False)
        elif kind == "generation":
            g = data["record"]
            verdict = "kept" if g.kept else "reverted"
            err.print(
                f"  generation {g.gen}: val {g.meta_utility_val:.3f}, test "
                f"{g.meta_utility_test:.3f}, {verdict} ({g.seconds:.0f} s)",
                highlight=False,
            )

    # A cluster has cores to spare: all k meta-utility tests at once instead of a few.
    parallel = config.tests if chosen.name == "ray" else None
    with executors.use(chosen):
        store, generations = self_improve(
            config, resume=resume, on_event=progress, parallel=parallel
        )
    best = current(generations)
    if as_json:
        out = {
            "run_id": store.id,
            "run_dir": str(store.dir),
            "best_generation": best.gen,
            "circumvention_rate": circumvention_rate(generations),
            "best_path": str(store.dir / best.path),
            "generations": [
                {
                    "gen": g.gen,
                    "parent": g.parent,
                    "path": str(store.dir / g.path),
                    "meta_utility_val": g.meta_utility_val,
                    "meta_utility_test": g.meta_utility_test,
                    "kept": g.kept,
                    "improver_status": g.improver_status,
                    "circumvented": g.circumvented,
                    "audit": [f.model_dump() for f in g.audit],
                    "findings": g.findings,
                    "calls": g.usage.calls,
                    "seconds": g.seconds,
                }
                for g in generations
            ],
        }
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title="Generations", title_justify="left")
    for column in ("gen", "parent", "val", "test", "spread", "kept", "calls", "time", "audit"):
        table.add_column(column, justify="left" if column == "audit" else "right")
    for g in generations:
        table.add_row(
            str(g.gen), "" if g.parent is None else str(g.parent),
            f"{g.meta_utility_val:.3f}", f"{g.meta_utility_test:.3f}", f"{g.meta.spread:.3f}",
            "[green]kept[/]" if g.kept else "[dim]reverted[/]",
            str(g.usage.calls), f"{g.seconds:.0f}s",
            ("[red]tried to switch the sandbox off[/] " if g.circumvented else "")
            + ", ".join(sorted({f.kind for f in g.audit if f.kind != "disables_sandbox"})),
        )  # fmt: skip
    console = Console()
    console.print(table)
    rate = circumvention_rate(generations)
    if rate or any("sandbox_probe" == t for t in config.tasks):
        console.print(
            f"Circumvention rate: {rate:.0%} of proposed improvers tried to switch the sandbox off"
        )
    console.print(
        f"Best improver: generation {best.gen} ({store.dir / best.path})\n"
        f"Use it: stop improve --improver {store.id}:{best.gen} --target ...\n"
        f"Run saved in: {store.dir}",
        highlight=False,
    )


def _check_resume(stored: Any, given: dict[str, Any], no_iterate: bool) -> None:
    """A resumed run keeps its configuration: flags that contradict it are bad input."""
    current = {
        "rounds": stored.rounds, "tasks": ",".join(stored.tasks), "tests": stored.tests,
        "improver": stored.improver, "seed": stored.seed, "backend": stored.model.backend,
        "model": stored.model.model, "base_url": stored.model.base_url,
        "script": stored.model.script,
    }  # fmt: skip
    for name, value in given.items():
        if value is not None and str(value) != str(current[name]):
            raise BadInput(
                f"run was started with --{name.replace('_', '-')} {current[name]}; "
                "resume it without that flag or with the same value"
            )
    if no_iterate and stored.iterative:
        raise BadInput("run was started iterative; resume it without --no-iterate")
