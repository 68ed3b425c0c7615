"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, Ollama) via the openai SDK.

Retries are the SDK's (max_retries) and nobody else's; every request has a timeout.
"""

from __future__ import annotations

import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from stop.errors import BadInput, ModelError
from stop.llm import register_backend
from stop.llm.base import Completion, ModelSettings, Prompt
from stop.llm.tokens import count_tokens

log = logging.getLogger(__name__)
_MAX_RETRIES = 2


def check_reachable(base_url: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before a run starts, when nothing listens at `base_url`."""
    url = urlparse(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise BadInput(f"--base-url {base_url!r} is not an http(s) URL")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise BadInput(f"cannot reach --base-url {base_url}: {exc.strerror or exc}") from exc


class OpenAIBackend:
    def __init__(self, settings: ModelSettings) -> None:
        import openai

        self._openai = openai
        base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL")
        key = os.environ.get(settings.api_key_env)
        if not key:
            if base_url is None:
                raise BadInput(
                    f"no API key: set {settings.api_key_env}, or pass --base-url for a local server"
                )
            key = "unused"  # local servers ignore it, but the SDK wants one
        if base_url:
            check_reachable(base_url)
        if not settings.model:
            raise BadInput("the openai backend needs --model (the server's model name)")
        self.settings = settings
        self.model = settings.model
        self.id = f"openai:{settings.model}@{base_url or 'default'}"
        self.client = openai.OpenAI(
            api_key=key, base_url=base_url, timeout=settings.timeout_s, max_retries=_MAX_RETRIES
        )

    def _one(self, prompt: Prompt) -> Completion:
        messages = [
            {"role": "system", "content": prompt.expertise},
            {"role": "user", "content": prompt.message},
        ]
        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=prompt.temperature,
                max_tokens=prompt.max_tokens,
                seed=prompt.seed * 1000 + prompt.sample,
            )
        except self._openai.APIError as exc:
            raise ModelError(f"{self.id}: {type(exc).__name__}: {exc}") from exc
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = response.usage
        if usage is not None:
            return Completion(
                text=text,
                prompt_tokens=usage.prompt_tokens or 0,
                completion_tokens=usage.completion_tokens or 0,
            )
        return Completion(
            text=text,
            prompt_tokens=count_tokens(prompt.expertise + prompt.message),
            completion_tokens=count_tokens(text),
        )

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        if len(prompts) == 1:
            return [self._one(prompts[0])]
        with ThreadPoolExecutor(max_workers=min(len(prompts), self.settings.concurrency)) as pool:
            return list(pool.map(self._one, prompts))


@register_backend("openai")
def _build(settings: ModelSettings) -> OpenAIBackend:
    return OpenAIBackend(settings)
