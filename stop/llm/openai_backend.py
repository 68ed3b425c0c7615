"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp server, Ollama) via the openai SDK.

Retries are the SDK's (max_retries: 429, 5xx, timeouts, dropped connections) and nobody
else's. Every attempt has a timeout (settings.timeout_s: to connect, for each read, and
for the whole body), and the body is read with a size cap. The reply is parsed here, not
trusted to the SDK: whatever the server sends, a sample ends as a Completion or a
ModelError, never as another exception.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field

from stop.errors import BadInput, ModelError
from stop.llm import BackendPlugin
from stop.llm.base import BatchFailure, Completion, Prompt, sample_seed
from stop.llm.tokens import count_tokens

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger(__name__)
_MAX_RETRIES = 2
# A reply body past this is refused unread: a guard on the host's memory, far above any
# reply that honours max_tokens. What is kept of a reply's text is capped separately
# (LanguageModel.max_reply_chars).
MAX_BODY_BYTES = 16 << 20
_ERROR_CHARS = 500  # of an error message kept (a server may put anything in one)


def check_server(base_url: str, api_key: str, key_env: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before a run starts, unless an OpenAI-compatible server answers at
    `base_url`: its models endpoint must answer with JSON that lists models. (A web page,
    or a port where something else listens, would otherwise score every candidate 0.)"""
    url = urlparse(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise BadInput(f"--base-url {base_url!r} is not an http(s) URL")
    endpoint = base_url.rstrip("/") + "/models"
    request = urllib.request.Request(endpoint, headers={"Authorization": f"Bearer {api_key}"})
    unlike = f"--base-url {base_url} does not answer like an OpenAI-compatible server"
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(1 << 20)
            kind = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise BadInput(
                f"the server at --base-url {base_url} refused the API key (HTTP {exc.code}): "
                f"check {key_env}"
            ) from exc
        raise BadInput(f"{unlike}: GET {endpoint} gave HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", exc)
        raise BadInput(
            f"cannot reach --base-url {base_url}: {getattr(why, 'strerror', None) or why}"
        ) from exc
    try:
        models = json.loads(body)["data"]
        if not isinstance(models, list):
            raise TypeError("data is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{unlike}: GET {endpoint} gave {kind}, not a list of models") from exc


class OpenAIBackend:
    def __init__(self, settings: OpenAIOptions) -> None:
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
            check_server(base_url, key, settings.api_key_env)
        if not settings.model:
            raise BadInput("the openai backend needs --model (the server's model name)")
        self.settings = settings
        self.model = settings.model
        self.id = f"openai:{settings.model}@{base_url or 'default'}"
        # The one limit on requests in flight to this server, whoever sends them (a
        # batch's samples, an improver's submitted requests, parallel meta-utility tests).
        self.concurrency = settings.concurrency
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self.client = openai.OpenAI(
            api_key=key, base_url=base_url, timeout=settings.timeout_s, max_retries=_MAX_RETRIES
        )

    def _fail(self, what: str) -> ModelError:
        return ModelError(f"{self.id}: {what}"[:_ERROR_CHARS])

    def _one(self, prompt: Prompt) -> Completion:
        try:
            body = self._request(prompt)
        except ModelError:
            raise
        except self._openai.OpenAIError as exc:  # after the SDK's retries
            raise self._fail(f"{type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - the transport's errors; never crash the host
            log.debug("request failed", exc_info=True)
            raise self._fail(f"{type(exc).__name__}: {exc}") from exc
        return self._parse(prompt, body)

    def _request(self, prompt: Prompt) -> bytes:
        """POST one chat completion and return its body, read within the cap and the time."""
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": prompt.expertise},
            {"role": "user", "content": prompt.message},
        ]
        with self.client.chat.completions.with_streaming_response.create(
            model=self.model,
            messages=messages,
            temperature=prompt.temperature,
            max_tokens=prompt.max_tokens,
            seed=sample_seed(prompt),
        ) as response:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BODY_BYTES:
                raise self._fail(f"reply of {length} bytes refused (the cap is {MAX_BODY_BYTES})")
            # Each read has the SDK's timeout; this bounds a server that trickles the body.
            deadline = time.monotonic() + self.settings.timeout_s
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise self._fail(f"reply over {MAX_BODY_BYTES} bytes refused")
                if time.monotonic() > deadline:
                    raise self._fail(f"reply body took over {self.settings.timeout_s:g} s")
                chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, prompt: Prompt, body: bytes) -> Completion:
        try:
            data = json.loads(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both
            raise self._fail(f"malformed JSON in the reply: {exc}") from exc
        if not isinstance(data, dict):
            raise self._fail(f"the reply is a JSON {type(data).__name__}, not an object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise self._fail(f"the reply has no choices: {json.dumps(choices)[:100]}")
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            raise self._fail(
                "the reply's first choice has no text content"
                + (f" (refusal: {refusal})" if refusal else "")
            )
        reason = choice.get("finish_reason")
        usage = data.get("usage")
        prompt_tokens = _count(usage, "prompt_tokens")
        completion_tokens = _count(usage, "completion_tokens")
        return Completion(
            text=content,
            prompt_tokens=(
                prompt_tokens
                if prompt_tokens is not None
                else count_tokens(prompt.expertise + prompt.message)
            ),
            completion_tokens=(
                completion_tokens if completion_tokens is not None else count_tokens(content)
            ),
            finish_reason=reason if isinstance(reason, str) else None,
        )

    def _sample(self, prompt: Prompt) -> Completion | ModelError:
        try:
            with self._slots:
                return self._one(prompt)
        except ModelError as exc:
            return exc

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        if len(prompts) <= 1:
            results = [self._sample(p) for p in prompts]
        else:
            workers = min(len(prompts), self.settings.concurrency)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(self._sample, prompts))
        if any(isinstance(r, ModelError) for r in results):
            raise BatchFailure(results)
        return results  # type: ignore[return-value]


def _count(usage: Any, field: str) -> int | None:
    """A token count the server reported, if it is a plausible one: a negative count must
    not give budget back."""
    value = usage.get(field) if isinstance(usage, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class OpenAIOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # the server's model name
    base_url: str | None = None  # default: $OPENAI_BASE_URL, else OpenAI's
    api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key (never the key)
    timeout_s: float = 120.0  # per HTTP attempt (connect, each read, the body); 2 SDK retries
    concurrency: int = Field(8, ge=1, le=256)  # requests in flight at once (--concurrency)


PLUGIN = BackendPlugin("openai", OpenAIOptions, OpenAIBackend)
