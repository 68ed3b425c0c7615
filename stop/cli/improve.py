"""`stop improve`: improve one program with one improver."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from stop.cli import app


class BackendName(str, Enum):
    local = "local"
    openai = "openai"
    scripted = "scripted"


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


# Where evaluations run: not part of a run's configuration, since it does not change
# results (a resumed run may use another executor).
EXECUTOR_OPTION = typer.Option(
    ExecutorName.local, help="Where sandboxed evaluations run: this machine or a Ray cluster."
)
RAY_ADDRESS_OPTION = typer.Option(
    None, help="The Ray head node's HOST:PORT, for --executor ray (default: $RAY_ADDRESS)."
)


@app.command()
def improve(
    target: Path = typer.Option(..., "--target", "-t", help="The Python program to improve."),
    utility: str = typer.Option(
        "speed", help="Built-in utility name or a .py file defining build()."
    ),
    improver: str = typer.Option("seed", help="Built-in improver name or a .py improver file."),
    entry: str = typer.Option(
        None, help="Function to time (default: named like the file, or the only one)."
    ),
    inputs: str = typer.Option(
        None, help="JSON list of argument lists (default: <target>.inputs.json)."
    ),
    budget: int = typer.Option(5, min=1, help="Utility evaluations the improver may ask for."),
    timeout: float = typer.Option(
        None, min=0.1, help="Seconds per candidate evaluation (default: from the original)."
    ),
    samples: int = typer.Option(4, min=1, help="Most responses per language-model call."),
    backend: BackendName = typer.Option(
        None, help="Model backend (default: openai with a base URL, else local)."
    ),
    model: str = typer.Option(None, help="Model name (openai) or GGUF file (local)."),
    base_url: str = typer.Option(
        None, help="OpenAI-compatible server URL (default: $OPENAI_BASE_URL)."
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", help="Environment variable holding the API key."
    ),
    script: Path = typer.Option(None, help="Scripted backend: JSON list of replies."),
    max_tokens: int = typer.Option(
        None, min=16, help="Tokens per response (default 256 local, 2048 otherwise)."
    ),
    llm_budget: int = typer.Option(
        16, min=1, help="Language-model completions the improver may request."
    ),
    seed: int = typer.Option(
        0, help="Sampling seed; change it to draw new samples past the cache."
    ),
    runs_dir: Path = typer.Option(Path("runs"), help="Where runs are saved."),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Do not replay or store model responses."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    executor: ExecutorName = EXECUTOR_OPTION,
    ray_address: str = RAY_ADDRESS_OPTION,
) -> None:
    """Ask a language model for rewrites of TARGET and keep the best by UTILITY."""
    from stop.improve import ImproveConfig
    from stop.improve import improve as run_improve
    from stop.llm import ModelSettings, choose_backend
    from stop.sandbox import executor as executors
    from stop.sandbox.executor import open_executor
    from stop.scoring.utility import UtilityOptions
    from stop.view.improve import ImproveProgress, result_json, summary

    backend = BackendName(
        choose_backend(backend and backend.value, base_url=base_url, model=model, script=script)
    )
    config = ImproveConfig(
        target=target,
        utility=utility,
        utility_options=UtilityOptions(
            budget=budget, entry=entry, inputs=inputs, timeout_s=timeout
        ),
        improver=improver,
        model=ModelSettings(
            backend=backend.value,
            model=model,
            base_url=base_url,
            api_key_env=api_key_env,
            script=script,
        ),
        max_responses_per_call=samples,
        max_tokens=max_tokens or (256 if backend is BackendName.local else 2048),
        model_budget_calls=llm_budget,
        seed=seed,
        runs_dir=runs_dir,
        use_cache=not no_cache,
    )
    # Opened before the run starts: an unreachable cluster leaves no run directory.
    with executors.use(open_executor(executor.value, ray_address)):
        if as_json:
            result = run_improve(config)
        else:
            with ImproveProgress(Console(stderr=True)) as progress:
                result = run_improve(config, on_event=progress)
    if as_json:
        typer.echo(json.dumps(result_json(result), indent=2))
    else:
        Console().print(summary(result))
    if result.status != "completed":
        raise typer.Exit(1)  # the run is saved, but the improver itself failed
