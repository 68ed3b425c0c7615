"""The one small protocol every language-model backend implements, and its records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class Prompt:
    """One sample to draw: everything that determines the response, the cache key included."""

    expertise: str  # the system message
    message: str  # the user message
    temperature: float
    max_tokens: int
    seed: int
    sample: int  # which sample of this exact prompt in this run (0, 1, ...)


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False


class Backend(Protocol):
    """A source of completions. `id` names all that determines them besides the prompt."""

    id: str

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        """One completion per prompt, in order; raise stop.errors.ModelError on failure."""
        ...


class ModelSettings(BaseModel):
    """How to build a backend; what the CLI's model flags fill in."""

    model_config = ConfigDict(extra="forbid")

    backend: str = "local"
    model: str | None = None  # model name (openai) or GGUF path (local)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 120.0  # per request; the SDK retries twice on top
    concurrency: int = 8  # parallel requests for one batch (openai)
    context_tokens: int = 4096  # local model context window
    script: Path | None = None  # scripted backend: JSON list of replies
