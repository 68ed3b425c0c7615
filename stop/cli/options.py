"""Options shared by the commands that run improvers. Every default is "unset" (None):
the library's defaults (stop/defaults.py, the backends' options) fill in what is not
given, so no default is written twice."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from stop.errors import BadInput

if TYPE_CHECKING:
    from stop.records import ModelSettings


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
) -> ModelSettings:
    """The model flags above as settings, checked against the backend's options."""
    from stop.llm import model_settings as settings

    extra = key_values(backend_option, "--backend-option")
    return settings(
        backend, extra, model=model, base_url=base_url, api_key_env=api_key_env, script=script
    )
