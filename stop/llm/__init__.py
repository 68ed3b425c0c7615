"""Language models: backends behind one protocol (stop/llm/base.py), found by name in the
`stop.backends` entry-point group, and the host-side model (stop/llm/model.py).

A backend is one module that defines `PLUGIN = BackendPlugin(name, Options, build)`:
`Options` is a pydantic model of the backend's own settings, `build(options)` returns a
Backend. It is found through its package's entry point

    [project.entry-points."stop.backends"]
    mine = "my_package.my_backend:PLUGIN"

The built-in backends (local, openai, scripted) are plugins of the same shape, named in
BUILTIN rather than through metadata, which a stale build folder can shadow; the scripted
model used in tests is one more plugin, not a mock. A backend's module loads only when
it is used (llama_cpp is heavy).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from stop.errors import BadInput
from stop.llm.base import Backend, Completion, Prompt
from stop.records import ModelSettings

ENTRY_POINT_GROUP = "stop.backends"
BUILTIN = {
    "local": "stop.llm.local:PLUGIN",
    "openai": "stop.llm.openai_backend:PLUGIN",
    "scripted": "stop.llm.scripted:PLUGIN",
}


@dataclass(frozen=True)
class BackendPlugin:
    name: str
    options: type[BaseModel]  # the backend's settings; unknown keys must be refused
    build: Callable[[Any], Backend]  # called with a validated `options` instance


def _available() -> dict[str, EntryPoint]:
    # A third party cannot shadow a built-in name.
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    builtin = {n: EntryPoint(n, v, ENTRY_POINT_GROUP) for n, v in BUILTIN.items()}
    return found | builtin


def backend_names() -> list[str]:
    return sorted(_available())


def backend_plugin(name: str) -> BackendPlugin:
    entry = _available().get(name)
    if entry is None:
        raise BadInput(f"unknown backend {name!r}; choose one of {', '.join(backend_names())}")
    try:
        plugin = entry.load()
    except Exception as exc:  # noqa: BLE001 - a third party's module: any failure is theirs
        raise BadInput(f"backend {name} ({entry.value}) fails to load: {exc}") from exc
    if not isinstance(plugin, BackendPlugin) or plugin.name != name:
        raise BadInput(f"backend {name} ({entry.value}) is not a BackendPlugin named {name!r}")
    return plugin


def _options(plugin: BackendPlugin, settings: ModelSettings) -> BaseModel:
    """The settings' options validated by their backend's own model."""
    try:
        return plugin.options.model_validate(settings.options)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "options"
        takes = ", ".join(plugin.options.model_fields) or "no options"
        if first["type"] == "extra_forbidden":
            raise BadInput(
                f"the {settings.backend} backend takes no {_flag(key)} (it takes: {takes})"
            ) from exc
        if first["type"] == "missing":
            raise BadInput(f"the {settings.backend} backend needs {_flag(key)}") from exc
        raise BadInput(f"{_flag(key)}: {first['msg']} (the {settings.backend} backend)") from exc


def _flag(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def build_backend(settings: ModelSettings) -> Backend:
    plugin = backend_plugin(settings.backend)
    return plugin.build(_options(plugin, settings))


def choose_backend(
    backend: str | None, *, base_url: str | None, model: str | None, script: object | None
) -> str:
    """The backend a user means when they do not name one: a script means scripted; a
    server URL, or a model name that is not a GGUF file, means openai; else local."""
    if backend:
        return backend
    if script:
        return "scripted"
    if base_url or os.environ.get("OPENAI_BASE_URL"):
        return "openai"
    if model and not model.endswith(".gguf"):
        return "openai"
    return "local"


def model_settings(backend: str | None, extra: dict[str, str], **given: Any) -> ModelSettings:
    """Settings from the CLI's model flags (`given`, None where unset) and its
    `--backend-option key=value`s, checked against the backend's options now, before
    anything runs: a flag the backend does not take is bad input, not ignored."""
    name = choose_backend(
        backend,
        base_url=given.get("base_url"),
        model=given.get("model"),
        script=given.get("script"),
    )
    options = {k: v for k, v in given.items() if v is not None} | extra
    settings = ModelSettings(backend=name, options=options)
    _options(backend_plugin(name), settings)
    return settings


__all__ = [
    "Backend",
    "BackendPlugin",
    "Completion",
    "ModelSettings",
    "Prompt",
    "backend_names",
    "backend_plugin",
    "build_backend",
    "choose_backend",
    "model_settings",
]
