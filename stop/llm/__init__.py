"""Language models: a registry of backends behind one protocol, and the host-side model.

Backends register a factory by name; the CLI and tests build them the same way, so the
scripted model used in tests is one more registered backend, not a mock.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

from stop.errors import BadInput
from stop.llm.base import Backend, Completion, ModelSettings, Prompt

_FACTORIES: dict[str, Callable[[ModelSettings], Backend]] = {}
# Built-in backends live in modules imported on first use (llama_cpp is heavy).
_BUILTIN = {
    "local": "stop.llm.local",
    "openai": "stop.llm.openai_backend",
    "scripted": "stop.llm.scripted",
}


def register_backend(name: str) -> Callable[[Callable[[ModelSettings], Backend]], Callable]:
    def decorate(factory: Callable[[ModelSettings], Backend]) -> Callable:
        _FACTORIES[name] = factory
        return factory

    return decorate


def backend_names() -> list[str]:
    return sorted(set(_FACTORIES) | set(_BUILTIN))


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


def build_backend(settings: ModelSettings) -> Backend:
    if settings.backend not in _FACTORIES and settings.backend in _BUILTIN:
        importlib.import_module(_BUILTIN[settings.backend])
    factory = _FACTORIES.get(settings.backend)
    if factory is None:
        raise BadInput(
            f"unknown backend {settings.backend!r}; choose one of {', '.join(backend_names())}"
        )
    return factory(settings)


__all__ = [
    "Backend",
    "Completion",
    "ModelSettings",
    "Prompt",
    "backend_names",
    "build_backend",
    "choose_backend",
    "register_backend",
]
