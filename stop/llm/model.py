"""The host-side language model: STOP's interface over a backend, a cache and budgets.

Improvers never hold this object; they hold a proxy whose calls arrive here, so the
budgets below are enforced where the improver cannot reach them.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from stop.errors import BudgetExhausted, StopError
from stop.llm.base import Backend, Completion, Prompt
from stop.llm.cache import ResponseCache, cache_key

log = logging.getLogger(__name__)

OnExchange = Callable[[Prompt, Completion], None]


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls: int = 0  # completions requested, cached ones included
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LanguageModel:
    """prompt / batch_prompt / budget / max_responses_per_call, as in STOP."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_responses_per_call: int,
        max_tokens: int,
        budget_calls: int,
        budget_tokens: int | None = None,
        seed: int = 0,
        cache: ResponseCache | None = None,
        on_exchange: OnExchange | None = None,
    ) -> None:
        self.backend = backend
        self.max_responses_per_call = max_responses_per_call
        self.max_tokens = max_tokens
        self.budget_calls = budget_calls
        self.budget_tokens = budget_tokens
        self.seed = seed
        self.cache = cache
        self.on_exchange = on_exchange
        self.usage = Usage()
        self._samples: Counter[tuple[str, str, float]] = Counter()
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        """Completions left to request."""
        return max(0, self.budget_calls - self.usage.calls)

    def _reserve(self, expertise: str, messages: list[str], temperature: float) -> list[Prompt]:
        if len(messages) > self.max_responses_per_call:
            raise StopError(
                f"asked for {len(messages)} responses in one call; "
                f"the most is {self.max_responses_per_call}"
            )
        with self._lock:
            if self.usage.calls + len(messages) > self.budget_calls:
                raise BudgetExhausted(
                    f"language-model budget: {self.budget} of {self.budget_calls} calls left, "
                    f"{len(messages)} asked"
                )
            if self.budget_tokens is not None and self.usage.tokens >= self.budget_tokens:
                raise BudgetExhausted(f"language-model token budget of {self.budget_tokens} spent")
            self.usage.calls += len(messages)
            prompts = []
            for message in messages:
                key = (expertise, message, temperature)
                prompts.append(
                    Prompt(
                        expertise,
                        message,
                        temperature,
                        self.max_tokens,
                        self.seed,
                        self._samples[key],
                    )
                )
                self._samples[key] += 1
        return prompts

    def batch_prompt(
        self, expertise: str, message_batch: list[str], temperature: float = 0.7
    ) -> list[str]:
        prompts = self._reserve(expertise, list(message_batch), temperature)
        keys = [cache_key(self.backend.id, p) for p in prompts]
        found = [self.cache.get(k) if self.cache else None for k in keys]
        missing = [i for i, c in enumerate(found) if c is None]
        if missing:
            fresh = self.backend.generate([prompts[i] for i in missing])
            for i, completion in zip(missing, fresh, strict=True):
                found[i] = completion
                if self.cache:
                    self.cache.put(keys[i], completion)
        completions = [c for c in found if c is not None]
        with self._lock:
            for completion in completions:
                self.usage.cached += completion.cached
                self.usage.prompt_tokens += completion.prompt_tokens
                self.usage.completion_tokens += completion.completion_tokens
        for prompt, completion in zip(prompts, completions, strict=True):
            if self.on_exchange:
                self.on_exchange(prompt, completion)
        log.debug("batch of %d: %d from cache", len(prompts), len(prompts) - len(missing))
        return [c.text for c in completions]

    def prompt(self, expertise: str, message: str, temperature: float = 0.7) -> str:
        return self.batch_prompt(expertise, [message], temperature)[0]
