"""`stop improve`: improve one program with one improver."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer
from rich.console import Console

from stop.cli import app, options


@app.command()
def improve(
    target: Path = typer.Option(..., "--target", "-t", help="The Python program to improve."),
    utility: str = typer.Option(
        "speed", help="Built-in utility name or a .py file defining build()."
    ),
    utility_option: list[str] = typer.Option(
        None, "--utility-option", help="KEY=VALUE for the utility's own options; repeatable."
    ),
    improver: str = typer.Option("seed", help="Built-in improver name or a .py improver file."),
    entry: str = typer.Option(
        None, help="Function to time (default: named like the file, or the only one)."
    ),
    inputs: str = typer.Option(
        None, help="JSON list of argument lists (default: <target>.inputs.json)."
    ),
    budget: int = typer.Option(
        None, min=1, help="Utility evaluations the improver may ask for (default 5)."
    ),
    timeout: float = typer.Option(
        None, min=0.1, help="Seconds per candidate evaluation (default: from the original)."
    ),
    samples: int = typer.Option(
        None, min=1, help="Most responses per language-model call (default 4)."
    ),
    backend: str = options.BACKEND,
    model: str = options.MODEL,
    base_url: str = options.BASE_URL,
    api_key_env: str = options.API_KEY_ENV,
    script: Path = options.SCRIPT,
    backend_option: list[str] = options.BACKEND_OPTION,
    max_tokens: int = typer.Option(
        None, min=16, help="Tokens per response (default 256 local, 2048 otherwise)."
    ),
    llm_budget: int = typer.Option(
        None, min=1, help="Language-model completions the improver may request (default 16)."
    ),
    seed: int = typer.Option(
        0, help="Sampling seed; change it to draw new samples past the cache."
    ),
    runs_dir: Path = options.RUNS_DIR,
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Do not replay or store model responses."
    ),
    as_json: bool = options.JSON,
    executor: options.ExecutorName = options.EXECUTOR,
    ray_address: str = options.RAY_ADDRESS,
    preset: str = options.PRESET,
) -> None:
    """Ask a language model for rewrites of TARGET and keep the best by UTILITY."""
    from stop.defaults import override, profile
    from stop.defaults import preset as find_preset
    from stop.improve import improve as run_improve
    from stop.records import ImproveConfig, UtilityOptions
    from stop.sandbox.executor import open_executor
    from stop.view.improve import ImproveProgress, summary
    from stop.wiring import Run

    settings = options.model_settings(backend, model, base_url, api_key_env, script, backend_option)
    budgets = profile(settings.backend)
    chosen_preset = find_preset(preset) if preset is not None else None
    if chosen_preset:
        budgets = chosen_preset.apply(budgets)
    config = ImproveConfig(
        target=target,
        utility=utility,
        utility_options=UtilityOptions(
            entry=entry,
            inputs=inputs,
            timeout_s=timeout,
            custom=options.key_values(utility_option, "--utility-option"),
        ),
        improver=improver,
        model=settings,
        budget=override(
            budgets.improve,
            model_calls=llm_budget,
            max_responses_per_call=samples,
            max_tokens=max_tokens,
            evaluations=budget,
        ),
        seed=seed,
        runs_dir=runs_dir,
        use_cache=not no_cache,
    )
    if chosen_preset:
        given = {"samples": samples, "llm_budget": llm_budget, "budget": budget}
        options.announce_preset(chosen_preset, "improve", given)
    # Opened before the run starts: an unreachable cluster leaves no run directory.
    chosen = open_executor(executor.value, ray_address)
    progress = None if as_json else ImproveProgress(Console(stderr=True))
    watchers = (progress,) if progress else ()
    run = Run(
        config.runs_dir,
        config.model,
        executor=chosen,
        use_cache=config.use_cache,
        watchers=watchers,
    )
    try:
        with run, progress or contextlib.nullcontext():
            result = run_improve(run, config)
    except KeyboardInterrupt:
        raise options.interrupted(run, resume=False) from None
    if as_json:
        options.print_json(result)
    else:
        options.stdout_console().print(summary(result))
    if result.status != "completed":
        raise typer.Exit(1)  # the run is saved, but the improver itself failed
