"""The host-side language model: STOP's interface over a backend, a cache and budgets.

Improvers never hold this object; they hold a proxy whose calls arrive here, so the
budgets below are enforced where the improver cannot reach them.

Model faults. A sample is charged to the call budget once, when it is asked for, whether
it succeeds, comes from the cache or fails; the SDK's retries of one request are not
charges, and a failed sample is never refunded (else an improver could loop on a broken
server for free). Tokens are charged as the server reports them, so a failed sample costs
none. A failed sample is reported to `on_failure` (the run's llm.jsonl) and counted in
`usage.failed`; it is not cached, so a re-run asks again. When some samples of a batch
fail, the others are still logged, cached and charged; if every message of the batch is
the same (samples of one prompt, interchangeable) the call returns the texts that came
back, fewer than asked; otherwise (all failed, or the failed sample's message was one of
several different ones, where positions matter) it raises ModelError. A reply's text is
cut to `max_reply_chars`; the cut is recorded in the completion (`clipped_chars`) and, like
a reply the server cut at max_tokens (finish_reason "length"), counted in `usage.truncated`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import cast

from stop.errors import BudgetExhausted, ModelError, StopError
from stop.llm.base import Backend, BatchFailure, Completion, Prompt
from stop.llm.cache import ResponseCache, cache_key
from stop.records import Usage

log = logging.getLogger(__name__)

OnExchange = Callable[[Prompt, Completion], None]
OnFailure = Callable[[Prompt, ModelError], None]
# Far above a reply that honours max_tokens (a token is a few characters), far below one
# that would burden the cache, llm.jsonl and the sandbox's messages.
MIN_REPLY_CHARS = 65_536
CHARS_PER_TOKEN_CAP = 16


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
        budget_requests: int | None = None,
        seed: int = 0,
        cache: ResponseCache | None = None,
        on_exchange: OnExchange | None = None,
        on_failure: OnFailure | None = None,
        max_reply_chars: int | None = None,
    ) -> None:
        self.backend = backend
        self.max_responses_per_call = max_responses_per_call
        self.max_tokens = max_tokens
        self.budget_calls = budget_calls
        self.budget_tokens = budget_tokens
        self.budget_requests = budget_requests  # calls, as STOP counts them; None: no cap
        self.requests = 0
        self.seed = seed
        self.cache = cache
        self.on_exchange = on_exchange
        self.on_failure = on_failure
        self.max_reply_chars = max_reply_chars or max(
            MIN_REPLY_CHARS, CHARS_PER_TOKEN_CAP * max_tokens
        )
        self.usage = Usage()
        self._samples: Counter[tuple[str, str, float]] = Counter()
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        """Completions left to request; with a cap on requests, requests left (STOP's
        `language_model.budget` counts calls)."""
        if self.budget_requests is not None:
            return max(0, self.budget_requests - self.requests)
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
                    f"language-model budget: {self.budget_calls - self.usage.calls} of "
                    f"{self.budget_calls} calls left, {len(messages)} asked"
                )
            if self.budget_tokens is not None and self.usage.tokens >= self.budget_tokens:
                raise BudgetExhausted(f"language-model token budget of {self.budget_tokens} spent")
            if self.budget_requests is not None and messages:
                if self.requests >= self.budget_requests:
                    raise BudgetExhausted(
                        f"language-model budget of {self.budget_requests} requests "
                        "(prompt or batch_prompt calls) spent"
                    )
                self.requests += 1
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

    def count_edit(self, mode: str, had_edits: bool) -> None:
        """How a reply asked for as edits was used (EditOutcome's mode)."""
        field = {"edits": "edits_applied", "none": "edits_failed"}.get(mode) or (
            "edits_fell_back" if had_edits else "edits_rewrites"
        )
        with self._lock:
            setattr(self.usage, field, getattr(self.usage, field) + 1)

    def batch_prompt(
        self, expertise: str, message_batch: list[str], temperature: float = 0.7
    ) -> list[str]:
        prompts = self._reserve(expertise, list(message_batch), temperature)
        keys = [cache_key(self.backend.id, p) for p in prompts]
        found: list[Completion | ModelError | None] = [
            self.cache.get(k) if self.cache else None for k in keys
        ]
        missing = [i for i, c in enumerate(found) if c is None]
        if missing:
            try:
                fresh: list[Completion | ModelError] = list(
                    self.backend.generate([prompts[i] for i in missing])
                )
            except BatchFailure as exc:
                fresh = exc.results
            except ModelError as exc:
                fresh = [exc] * len(missing)
            for i, outcome in zip(missing, fresh, strict=True):
                if isinstance(outcome, Completion):
                    outcome = self._clip(outcome)
                    if self.cache:
                        self.cache.put(keys[i], outcome)
                found[i] = outcome
        done = cast("list[Completion | ModelError]", found)  # every missing one was filled
        outcomes = [self._clip(o) if isinstance(o, Completion) else o for o in done]
        completions = [o for o in outcomes if isinstance(o, Completion)]
        failures = [o for o in outcomes if isinstance(o, ModelError)]
        with self._lock:
            for completion in completions:
                self.usage.cached += completion.cached
                self.usage.prompt_tokens += completion.prompt_tokens
                self.usage.completion_tokens += completion.completion_tokens
                self.usage.truncated += (
                    completion.finish_reason == "length" or completion.clipped_chars > 0
                )
            self.usage.failed += len(failures)
        for prompt, outcome in zip(prompts, outcomes, strict=True):
            if isinstance(outcome, Completion):
                if self.on_exchange:
                    self.on_exchange(prompt, outcome)
            elif self.on_failure:
                self.on_failure(prompt, outcome)
        log.debug(
            "batch of %d: %d from cache, %d failed",
            len(prompts),
            len(prompts) - len(missing),
            len(failures),
        )
        if failures:
            log.warning("language model: %d of %d samples failed", len(failures), len(prompts))
            if not completions or len(set(message_batch)) > 1:
                raise ModelError(
                    f"{len(failures)} of {len(prompts)} samples failed; the first: {failures[0]}"
                )
        return [c.text for c in completions]

    def _clip(self, completion: Completion) -> Completion:
        cap = self.max_reply_chars
        if len(completion.text) <= cap:
            return completion
        dropped = len(completion.text) - cap
        return completion.model_copy(
            update={
                "text": completion.text[:cap],
                "clipped_chars": completion.clipped_chars + dropped,
            }
        )

    def prompt(self, expertise: str, message: str, temperature: float = 0.7) -> str:
        return self.batch_prompt(expertise, [message], temperature)[0]
