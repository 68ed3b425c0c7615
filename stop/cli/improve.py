"""`stop improve`: improve one program with one improver."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from stop.cli import app, options
from stop.errors import BadInput

if TYPE_CHECKING:
    from stop.records import ImproveConfig

log = logging.getLogger(__name__)


@app.command()
def improve(
    target: Path = typer.Option(None, "--target", "-t", help="The Python program to improve."),
    utility: str = typer.Option(
        None, help="Built-in utility name or a .py file defining build() (default speed)."
    ),
    utility_option: list[str] = typer.Option(
        None, "--utility-option", help="KEY=VALUE for the utility's own options; repeatable."
    ),
    improver: str = typer.Option(
        None, help="Built-in improver name or a .py improver file (default seed)."
    ),
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
        None, help="Sampling seed (default 0); change it to draw new samples past the cache."
    ),
    concurrency: int = options.CONCURRENCY,
    max_usd: float = options.MAX_USD,
    price_input: float = options.PRICE_INPUT,
    price_output: float = options.PRICE_OUTPUT,
    prices: Path = options.PRICES,
    resume: str = typer.Option(
        None, help="Go on with run <run-id>, killed or interrupted, replaying its answers."
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
    from stop.defaults import estimate_improve
    from stop.improve import improve as run_improve
    from stop.sandbox.executor import open_executor
    from stop.view.improve import ImproveProgress, summary
    from stop.wiring import Run

    flags = {
        "target": target,
        "utility": utility,
        "improver": improver,
        "entry": entry,
        "inputs": inputs,
        "budget": budget,
        "timeout": timeout,
        "samples": samples,
        "backend": backend,
        "model": model,
        "base_url": base_url,
        "api_key_env": api_key_env,
        "script": script,
        "backend_option": backend_option or None,
        "max_tokens": max_tokens,
        "llm_budget": llm_budget,
        "seed": seed,
        "no_cache": no_cache or None,
        "concurrency": concurrency,
        "max_usd": max_usd,
        "price_input": price_input,
        "price_output": price_output,
        "prices": prices,
        "preset": preset,
        "utility_option": utility_option or None,
    }
    if resume is not None:
        config = _resumed(runs_dir, resume, flags)
    else:
        config = _config(runs_dir, flags)
    if config.money is None and config.model.backend not in ("local", "scripted"):
        log.info("no price for this model: the run counts tokens, not money")
    # Opened before the run starts: an unreachable cluster leaves no run directory.
    chosen = open_executor(executor.value, ray_address)
    line = estimate_improve(config).line(config.model.backend, config.money)
    progress = None if as_json else ImproveProgress(Console(stderr=True), preamble=line)
    watchers = (progress,) if progress else ()
    run = Run(
        config.runs_dir,
        config.model,
        executor=chosen,
        use_cache=config.use_cache,
        watchers=watchers,
        money=config.money,
    )
    try:
        with run, progress or contextlib.nullcontext():
            result = run_improve(run, config, resume=resume)
    except KeyboardInterrupt:
        raise options.interrupted(run, resume=False) from None
    if as_json:
        options.print_json(result)
    else:
        options.stdout_console().print(summary(result))
    if result.status != "completed":
        raise typer.Exit(1)  # the run is saved, but the improver itself failed


def _config(runs_dir: Path, flags: dict[str, Any]) -> ImproveConfig:
    """A new run's configuration from its flags."""
    from stop.defaults import override, profile
    from stop.defaults import preset as find_preset
    from stop.records import ImproveConfig, UtilityOptions

    if flags["target"] is None:
        raise BadInput("stop improve needs --target (the program to improve), or --resume")
    settings = options.model_settings(
        flags["backend"],
        flags["model"],
        flags["base_url"],
        flags["api_key_env"],
        flags["script"],
        flags["backend_option"],
        flags["concurrency"],
    )
    budgets = profile(settings.backend)
    chosen_preset = find_preset(flags["preset"]) if flags["preset"] is not None else None
    if chosen_preset:
        budgets = chosen_preset.apply(budgets)
    config = ImproveConfig(
        target=flags["target"],
        utility=flags["utility"] or "speed",
        utility_options=UtilityOptions(
            entry=flags["entry"],
            inputs=flags["inputs"],
            timeout_s=flags["timeout"],
            custom=options.key_values(flags["utility_option"], "--utility-option"),
        ),
        improver=flags["improver"] or "seed",
        model=settings,
        budget=override(
            budgets.improve,
            model_calls=flags["llm_budget"],
            max_responses_per_call=flags["samples"],
            max_tokens=flags["max_tokens"],
            evaluations=flags["budget"],
        ),
        seed=flags["seed"] or 0,
        runs_dir=runs_dir,
        use_cache=not flags["no_cache"],
        money=options.money(
            settings, flags["max_usd"], flags["price_input"], flags["price_output"], flags["prices"]
        ),
    )
    if chosen_preset:
        given = {k: flags[k] for k in ("samples", "llm_budget", "budget")}
        options.announce_preset(chosen_preset, "improve", given)
    return config


def _resumed(runs_dir: Path, run_id: str, flags: dict[str, Any]) -> ImproveConfig:
    """The configuration of run `run_id`, which can be resumed; a flag given beside
    --resume is bad input (the run keeps its configuration), --runs-dir and the output
    and executor flags aside."""
    from stop.records import ImproveConfig
    from stop.store import check_resumable, read_config

    check_resumable(runs_dir, run_id, "improve")
    given = [name for name, value in flags.items() if value is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise BadInput(f"a resumed run keeps its configuration: resume {run_id} without {flag}")
    config = read_config(runs_dir, run_id, ImproveConfig)
    if not config.use_cache:
        raise BadInput(
            f"run {run_id} ran with --no-cache: there are no answers to replay, so resuming "
            "it would pay for every request again; start it anew instead"
        )
    return config
