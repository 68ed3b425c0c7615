"""`stop self-improve`: the improver improves itself, round after round."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from stop.cli import app, options
from stop.errors import BadInput

if TYPE_CHECKING:
    from stop.records import SelfImproveConfig


@app.command("self-improve")
def self_improve_command(
    rounds: int = typer.Option(None, help="Self-improvement rounds (default 5)."),
    tasks: str = typer.Option(None, help="Comma-separated downstream tasks (default lpn)."),
    tests: int = typer.Option(
        None, help="Meta-utility tests per evaluation (k; default 2 local, 3 otherwise)."
    ),
    improver: str = typer.Option(None, help="Generation 0: seed, a .py file or <run-id>:<gen>."),
    no_iterate: bool = typer.Option(
        False, "--no-iterate", help="Non-iterative: the seed improver does all the improving."
    ),
    resume: str = typer.Option(None, help="Continue run <run-id> where it stopped."),
    backend: str = options.BACKEND,
    model: str = options.MODEL,
    base_url: str = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    script: Path = options.SCRIPT,
    backend_option: list[str] = options.BACKEND_OPTION,
    seed: int = typer.Option(None, help="Sampling seed (default 0)."),
    concurrency: int = options.CONCURRENCY,
    max_usd: float = options.MAX_USD,
    price_input: float = options.PRICE_INPUT,
    price_output: float = options.PRICE_OUTPUT,
    prices: Path = options.PRICES,
    runs_dir: Path = options.RUNS_DIR,
    as_json: bool = options.JSON,
    executor: options.ExecutorName = options.EXECUTOR,
    ray_address: str = options.RAY_ADDRESS,
    preset: str = options.PRESET,
) -> None:
    """Apply the improver to its own source, scored by the meta-utility, round after round."""
    from stop.defaults import estimate, profile
    from stop.defaults import preset as find_preset
    from stop.records import SelfImproveConfig
    from stop.sandbox.executor import open_executor
    from stop.self_improve import prepare, self_improve
    from stop.store import read_config
    from stop.view.self_improve import SelfImproveProgress, generations_summary
    from stop.wiring import Run

    flags = {"model": model, "base_url": base_url, "api_key_env": api_key_env, "script": script}
    chosen_preset = None
    if resume is not None:
        if preset is not None:
            raise BadInput("a resumed run keeps its configuration: resume it without --preset")
        config = read_config(runs_dir, resume, SelfImproveConfig)
        given = {
            "rounds": rounds,
            "tasks": tasks,
            "tests": tests,
            "improver": improver,
            "seed": seed,
            "backend": backend,
            **flags,
        }
        _check_resume(config, given, no_iterate, backend_option)
        money_flags = {"--concurrency": concurrency, "--max-usd": max_usd, "--prices": prices}
        money_flags |= {"--price-input": price_input, "--price-output": price_output}
        for flag, value in money_flags.items():
            if value is not None:
                raise BadInput(
                    f"a resumed run keeps its configuration: resume {resume} without {flag}"
                )
    else:
        settings = options.model_settings(
            backend, model, base_url, api_key_env, script, backend_option, concurrency
        )
        budgets = profile(settings.backend)
        chosen_preset = find_preset(preset) if preset is not None else None
        if chosen_preset:
            budgets = chosen_preset.apply(budgets)
        if tests is not None and tests < 1:  # before `tests or ...` makes 0 the default
            raise BadInput("--tests must be at least 1")
        config = SelfImproveConfig(
            tasks=[t.strip() for t in (tasks or "lpn").split(",") if t.strip()],
            rounds=(chosen_preset.rounds if chosen_preset else 5) if rounds is None else rounds,
            tests=tests or budgets.tests,
            iterative=not no_iterate,
            improver=improver or "seed",
            model=settings,
            round_budget=budgets.round,
            test_budget=budgets.test,
            seed=seed or 0,
            runs_dir=runs_dir,
            money=options.money(settings, max_usd, price_input, price_output, prices),
        )
    # Everything checked before anything is printed or written: the configuration, the
    # model (a base URL must answer like an OpenAI-compatible server), the cluster.
    prepare(config)
    chosen = open_executor(executor.value, ray_address)
    err = Console(stderr=True)
    announced: list[str] = []

    def announce(event: object) -> None:
        # The run id first thing (the first event once the run has its folder): Ctrl-C
        # later needs it, and so does --resume.
        if run.store is not None and not announced:
            announced.append(run.store.id)
            resume_with = options.resume_command(run.store.id, runs_dir)
            err.print(
                f"Run {run.store.id} in {run.store.dir} (resume: {resume_with})",
                highlight=False,
                soft_wrap=True,
            )

    run = Run(
        runs_dir,
        config.model,
        executor=chosen,
        watchers=(announce, SelfImproveProgress(err)),
        money=config.money,
    )
    if chosen_preset:
        options.announce_preset(chosen_preset, "self-improve", {"tests": tests, "rounds": rounds})
    line = estimate(config).line(config.model.backend, config.money)
    err.print(line, highlight=False, soft_wrap=True)
    # A cluster has cores to spare: all k meta-utility tests at once instead of a few.
    parallel = config.tests if chosen.name == "ray" else None
    try:
        with run:
            result = self_improve(run, config, resume=resume, parallel=parallel)
    except KeyboardInterrupt:
        raise options.interrupted(run, resume=True) from None
    if as_json:
        options.print_json(result)
    else:
        options.stdout_console().print(generations_summary(result, config), highlight=False)


def _check_resume(
    stored: SelfImproveConfig,
    given: dict[str, Any],
    no_iterate: bool,
    backend_option: list[str] | None,
) -> None:
    """A resumed run keeps its configuration: flags that contradict it are bad input."""
    current = {
        "rounds": stored.rounds,
        "tasks": ",".join(stored.tasks),
        "tests": stored.tests,
        "improver": stored.improver,
        "seed": stored.seed,
        "backend": stored.model.backend,
        **{k: stored.model.option(k) for k in ("model", "base_url", "api_key_env", "script")},
    }
    for name, value in given.items():
        if value is not None and str(value) != str(current[name]):
            raise BadInput(
                f"run was started with --{name.replace('_', '-')} {current[name]}; "
                "resume it without that flag or with the same value"
            )
    if backend_option:
        raise BadInput("a resumed run keeps its backend options: resume it without them")
    if no_iterate and stored.iterative:
        raise BadInput("run was started iterative; resume it without --no-iterate")
