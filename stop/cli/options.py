"""Options shared by the commands that run improvers. Every default is "unset" (None):
the library's defaults (stop/defaults.py, the backends' options) fill in what is not
given, so no default is written twice."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from stop.errors import BadInput, Interrupted

if TYPE_CHECKING:
    from stop.defaults import Preset
    from stop.records import ModelSettings, Money
    from stop.wiring import Run


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


BACKEND = typer.Option(
    None,
    help="Model backend: local, openai, scripted or a plugin's (default: openai with a "
    "base URL or a server model name, else local).",
)
MODEL = typer.Option(None, help="Model name (openai) or GGUF file (local).")
BASE_URL = typer.Option(None, help="OpenAI-compatible server URL (default: $OPENAI_BASE_URL).")
API_KEY_ENV = typer.Option(
    None, help="Environment variable holding the API key (default OPENAI_API_KEY)."
)
SCRIPT = typer.Option(None, help="Scripted backend: JSON list of replies.")
BACKEND_OPTION = typer.Option(
    None, "--backend-option", help="KEY=VALUE for the backend's own options; repeatable."
)
RUNS_DIR = typer.Option(Path("runs"), help="Where runs (and the response cache) live.")
JSON = typer.Option(False, "--json", help="Print one JSON object instead of tables.")
# Where evaluations run: not part of a run's configuration, since it does not change
# results (a resumed run may use another executor).
EXECUTOR = typer.Option(
    ExecutorName.local, help="Where sandboxed evaluations run: this machine or a Ray cluster."
)
RAY_ADDRESS = typer.Option(
    None, help="The Ray head node's HOST:PORT, for --executor ray (default: $RAY_ADDRESS)."
)
CONCURRENCY = typer.Option(
    None,
    min=1,
    help="Requests in flight to a server model at once (default 8); improvers that "
    "submit keep this many outstanding.",
)
MAX_USD = typer.Option(
    None,
    help="Stop asking the model once the next request could take spending past this "
    "many US dollars (needs the model's prices).",
)
PRICE_INPUT = typer.Option(None, help="USD per million input (prompt) tokens.")
PRICE_OUTPUT = typer.Option(None, help="USD per million output (completion) tokens.")
PRICES = typer.Option(None, "--prices", help="JSON file of prices by model name (README: Money).")
PRESET = typer.Option(
    None,
    help="Another tool's settings: stop-paper (STOP's code: 6 samples per call, 4 model "
    "calls, 25 evaluations, 5 meta-utility tests, 6 rounds). Flags given override it.",
)


def announce_preset(preset: Preset, command: str, given: dict[str, Any]) -> None:
    """One line on stderr (stdout may be --json's): what the preset set, and which of it
    the flags in `given` (name: value, None when not given) replaced."""
    from stop.cli import err_console

    p, per = preset, " per test" if command == "self-improve" else ""
    parts: list[tuple[str, str | None]] = [
        (f"{p.max_responses_per_call} samples per call", "samples"),
        (f"{p.model_requests} model calls per improver run", None),
        (f"{p.model_requests * p.max_responses_per_call} completions", "llm_budget"),
        (f"{p.evaluations} utility evaluations{per}", "budget"),
    ]
    if command == "self-improve":
        parts += [
            (f"{p.evaluations} meta-utility evaluations per round", None),
            (f"{p.tests} meta-utility tests", "tests"),
            (f"{p.rounds} rounds", "rounds"),
        ]
    kept = [what for what, flag in parts if flag is None or given.get(flag) is None]
    replaced = [
        f"--{flag.replace('_', '-')} {given[flag]}"
        for _, flag in parts
        if flag is not None and given.get(flag) is not None
    ]
    line = f"Preset {p.name}: {', '.join(kept)}"
    if replaced:
        line += f"; {', '.join(replaced)} as given"
    err_console.print(line + ".", highlight=False, soft_wrap=True)


PIPE_WIDTH = 10_000  # piped output: nothing a table or a path holds is wrapped


def stdout_console() -> Console:
    """Standard output at the terminal's width (or COLUMNS'), or, piped, at one that
    wraps nothing (a path or a command stays one line)."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=PIPE_WIDTH)


def print_json(data: Any) -> None:
    """Every command's --json: one document on stdout, indented alike; records as their
    JSON form."""
    import json

    from pydantic import BaseModel

    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    typer.echo(json.dumps(data, indent=2, default=str))


def resume_command(run_id: str, runs_dir: Path) -> str:
    where = "" if runs_dir == Path("runs") else f" --runs-dir {runs_dir}"
    return f"stop self-improve --resume {run_id}{where}"


def interrupted(run: Run, resume: bool) -> Interrupted:
    """What Ctrl-C leaves, said in one line: nothing, or the run folder (marked
    interrupted in its log) and, for a run that can go on, the command that resumes it."""
    store = run.store
    if store is None:
        return Interrupted("before the run started: nothing was written")
    if resume:
        kept = len(list((store.dir / "generations").glob("gen_*.json")))
        return Interrupted(
            f"run {store.id} keeps {kept} generation(s) in {store.dir}; resume with: "
            f"{resume_command(store.id, run.runs_dir)}"
        )
    kept = len(list((store.dir / "candidates").glob("*.json")))
    return Interrupted(
        f"run {store.id} keeps {kept} scored candidate(s) in {store.dir}, marked interrupted; "
        "running the command again replays the model's answers from the cache"
    )


def key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    """A repeatable KEY=VALUE option as a dict (KEY's dashes read as underscores)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{flag} {item!r} is not KEY=VALUE")
        out[key.strip().replace("-", "_")] = value
    return out


def model_settings(
    backend: str | None,
    model: str | None,
    base_url: str | None,
    api_key_env: str | None,
    script: Path | None,
    backend_option: list[str] | None,
    concurrency: int | None = None,
) -> ModelSettings:
    """The model flags above as settings, checked against the backend's options."""
    from stop.llm import model_settings as settings

    extra = key_values(backend_option, "--backend-option")
    return settings(
        backend,
        extra,
        model=model,
        base_url=base_url,
        api_key_env=api_key_env,
        script=script,
        concurrency=concurrency,
    )


def money(
    settings: ModelSettings,
    max_usd: float | None,
    price_input: float | None,
    price_output: float | None,
    prices: Path | None,
) -> Money | None:
    """The run's prices and cap from the money flags; None where the model is free or its
    price unknown and there is no cap (then the run counts tokens, not money)."""
    from stop.llm.prices import NO_CHARGE, resolve_prices
    from stop.records import Money

    if max_usd is not None and not (0 < max_usd < float("inf")):
        raise BadInput(f"--max-usd must be a positive number of US dollars, not {max_usd:g}")
    found = resolve_prices(
        settings.option("model"),
        backend=settings.backend,
        input_per_mtok=price_input,
        output_per_mtok=price_output,
        prices_file=prices,
        required=max_usd is not None,
    )
    if found is None or (found == NO_CHARGE and max_usd is None):
        return None
    return Money(prices=found, max_usd=max_usd)
