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
from stop.llm.purse import Purse
from stop.llm.tokens import count_tokens, warm
from stop.records import Usage

log = logging.getLogger(__name__)

OnExchange = Callable[[Prompt, Completion], None]
OnFailure = Callable[[Prompt, ModelError], None]
# Far above a reply that honours max_tokens (a token is a few characters), far below one
# that would burden the cache, llm.jsonl and the sandbox's messages.
MIN_REPLY_CHARS = 65_536
CHARS_PER_TOKEN_CAP = 16
PROMPT_TOKEN_MARGIN = 1.25  # a server's tokenizer may count more than tiktoken
TEMPLATE_TOKENS = 32  # the chat template's tokens around the system and user messages


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
        purse: Purse | None = None,
    ) -> None:
        self.backend = backend
        self.max_responses_per_call = max_responses_per_call
        self.max_tokens = max_tokens
        self.budget_calls = budget_calls
        self.budget_tokens = budget_tokens
        self.budget_requests = budget_requests  # calls, as STOP counts them; None: no cap
        self.requests = 0
        self.purse = purse  # the run's money (its prices, its cap); None: no charge
        self.seed = seed
        self.cache = cache
        self.on_exchange = on_exchange
        self.on_failure = on_failure
        self.max_reply_chars = max_reply_chars or max(
            MIN_REPLY_CHARS, CHARS_PER_TOKEN_CAP * max_tokens
        )
        self.usage = Usage()
        self._samples: Counter[tuple[str, str, float]] = Counter()
        # Worst-case tokens and USD of each sample reserved and not yet back.
        self._holds: dict[Prompt, tuple[int, float]] = {}
        self._generations = [0, 0]  # backend calls begun, ended (ints: atomic enough)
        self._lock = threading.Lock()
        warm()  # reserve counts tokens: the encoding loads while the run is set up

    @property
    def budget(self) -> int:
        """Completions left to request; with a cap on requests, requests left (STOP's
        `language_model.budget` counts calls)."""
        # Not even a reply to an empty prompt could be paid for: say so as STOP says a
        # spent budget, so that an improver that checks it ends cleanly.
        if self.purse is not None and not self.purse.affords(
            self._usd(TEMPLATE_TOKENS, self.max_tokens)
        ):
            return 0
        if self.budget_requests is not None:
            return max(0, self.budget_requests - self.requests)
        return max(0, self.budget_calls - self.usage.calls)

    def reserve(self, expertise: str, messages: list[str], temperature: float) -> list[Prompt]:
        """Charge the samples of `messages` now, before any is sent, or raise
        BudgetExhausted: every budget counts what is in flight as if it were spent at its
        worst (tokens and money at max_tokens), so concurrent requests never overspend."""
        if len(messages) > self.max_responses_per_call:
            raise StopError(
                f"asked for {len(messages)} responses in one call; "
                f"the most is {self.max_responses_per_call}"
            )
        # Counted with tiktoken, which is not every server's tokenizer: a margin, and the
        # chat template's own tokens.
        worst_prompt = [
            int(count_tokens(expertise + m) * PROMPT_TOKEN_MARGIN) + TEMPLATE_TOKENS
            for m in messages
        ]
        worst = [(t + self.max_tokens, self._usd(t, self.max_tokens)) for t in worst_prompt]
        worst_usd = sum(usd for _, usd in worst)
        with self._lock:
            if self.usage.calls + len(messages) > self.budget_calls:
                raise BudgetExhausted(
                    f"language-model budget: {self.budget_calls - self.usage.calls} of "
                    f"{self.budget_calls} calls left, {len(messages)} asked"
                )
            if (
                self.budget_tokens is not None
                and self.usage.tokens + sum(t for t, _ in self._holds.values())
                >= self.budget_tokens
            ):
                raise BudgetExhausted(f"language-model token budget of {self.budget_tokens} spent")
            counted = self.budget_requests is not None and bool(messages)
            if counted and self.requests >= (self.budget_requests or 0):
                raise BudgetExhausted(
                    f"language-model budget of {self.budget_requests} requests "
                    "(prompt or batch_prompt calls) spent"
                )
            if self.purse is not None:
                self.purse.hold(worst_usd)  # the last check: past it, the request is made
            self.requests += counted
            self.usage.calls += len(messages)
            prompts = []
            for message, hold in zip(messages, worst, strict=True):
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
                self._holds[prompts[-1]] = hold
        return prompts

    def _usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.purse.price(prompt_tokens, completion_tokens) if self.purse else 0.0

    def release(self, prompts: list[Prompt]) -> None:
        """Give back what `reserve` held for prompts that will never be sent (the run ended
        first): their calls stay charged, their tokens and money are not spent."""
        with self._lock:
            for prompt in prompts:
                self._unhold(prompt)

    def mark(self) -> tuple[int, int]:
        """Where this model's generation stands (generations begun, ended), for `busy`."""
        return self._generations[0], self._generations[1]

    def busy(self, since: tuple[int, int]) -> bool:
        """Whether the model generated on this machine's cores at any moment since `since`
        (a mark): a timing taken meanwhile shared the cores with it."""
        if not getattr(self.backend, "shares_cores", False):
            return False
        begun, ended = since
        return begun != ended or self._generations[0] != begun

    def abandon(self) -> None:
        """The requests still in flight will not be waited for: what they hold is spent."""
        with self._lock:
            for prompt in list(self._holds):
                self.usage.usd += self._unhold(prompt, spent=None)

    def _unhold(self, prompt: Prompt, spent: float | None = 0.0) -> float:
        """End a prompt's hold; it cost `spent` (None: its worst case). Returns the cost."""
        _, usd = self._holds.pop(prompt, (0, 0.0))
        spent = usd if spent is None else spent
        if self.purse is not None:
            self.purse.settle(usd, spent)
        return spent

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
        prompts = self.reserve(expertise, list(message_batch), temperature)
        outcomes = self.complete(prompts)
        completions = [o for o in outcomes if isinstance(o, Completion)]
        failures = [o for o in outcomes if isinstance(o, ModelError)]
        if failures and (not completions or len(set(message_batch)) > 1):
            raise ModelError(
                f"{len(failures)} of {len(prompts)} samples failed; the first: {failures[0]}"
            )
        return [c.text for c in completions]

    def complete(self, prompts: list[Prompt]) -> list[Completion | ModelError]:
        """Draw reserved prompts (from the cache, else the backend), account for what they
        cost, and log them: each prompt's Completion or ModelError, in order."""
        keys = [cache_key(self.backend.id, p) for p in prompts]
        found: list[Completion | ModelError | None] = [
            self.cache.get(k) if self.cache else None for k in keys
        ]
        missing = [i for i, c in enumerate(found) if c is None]
        if missing:
            self._generations[0] += 1
            try:
                fresh: list[Completion | ModelError] = list(
                    self.backend.generate([prompts[i] for i in missing])
                )
            except BatchFailure as exc:
                fresh = exc.results
            except ModelError as exc:
                fresh = [exc] * len(missing)
            finally:
                self._generations[1] += 1
            for i, outcome in zip(missing, fresh, strict=True):
                if isinstance(outcome, Completion):
                    outcome = self._clip(outcome)
                    if self.cache:
                        self.cache.put(keys[i], outcome)
                found[i] = outcome
        done = cast("list[Completion | ModelError]", found)  # every missing one was filled
        outcomes = [self._clip(o) if isinstance(o, Completion) else o for o in done]
        failures = sum(isinstance(o, ModelError) for o in outcomes)
        with self._lock:
            for prompt, outcome in zip(prompts, outcomes, strict=True):
                if isinstance(outcome, ModelError):
                    self._unhold(prompt)  # a failed sample costs nothing
                    continue
                usd = self._unhold(
                    prompt, self._usd(outcome.prompt_tokens, outcome.completion_tokens)
                )
                self.usage.usd += usd
                self.usage.usd_cached += usd if outcome.cached else 0.0
                self.usage.cached += outcome.cached
                self.usage.prompt_tokens += outcome.prompt_tokens
                self.usage.completion_tokens += outcome.completion_tokens
                self.usage.truncated += (
                    outcome.finish_reason == "length" or outcome.clipped_chars > 0
                )
            self.usage.failed += failures
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
            failures,
        )
        if failures:
            log.warning("language model: %d of %d samples failed", failures, len(prompts))
        return outcomes

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
