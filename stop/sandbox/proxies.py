"""What an improver receives as `language_model` and `utility`: proxies to the host.

The improver cannot raise a budget by changing these objects: the numbers here are a
courtesy copy, and the host counts and refuses on its own side.
"""

from __future__ import annotations

from typing import Any

from stop.errors import BudgetExhausted, StopError


def _unwrap(reply: dict) -> Any:
    if "error" in reply:
        error = reply["error"]
        if reply.get("kind") == "budget":
            raise BudgetExhausted(error)
        raise StopError(error)
    return reply["ok"]


class LanguageModelProxy:
    """STOP's language-model interface: prompt, batch_prompt, budget, max_responses_per_call."""

    def __init__(self, chan: Any, budget: int, max_responses_per_call: int) -> None:
        self._chan = chan
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call

    def batch_prompt(
        self, expertise: str, message_batch: list[str] | str, temperature: float = 0.7
    ) -> list[str]:
        if isinstance(message_batch, str):
            message_batch = [message_batch]
        reply = self._chan.call(
            {
                "op": "batch_prompt",
                "expertise": str(expertise),
                "messages": [str(m) for m in message_batch],
                "temperature": float(temperature),
            }
        )
        responses = _unwrap(reply)
        self.budget = reply.get("budget", self.budget)
        return responses

    def prompt(self, expertise: str, message: str, temperature: float = 0.7) -> str:
        return self.batch_prompt(expertise, [message], temperature)[0]


class UtilityProxy:
    """Callable utility: `utility(program) -> float`, with `str`, `budget` and `uses`."""

    def __init__(self, chan: Any, name: str, description: str, budget: int) -> None:
        self._chan = chan
        self.name = name
        self.str = description
        self.budget = budget
        self.uses = 0

    def __call__(self, program: str, use_sandbox: bool = True) -> float:
        request = {"op": "utility", "program": str(program)}
        if use_sandbox is not True:
            request["use_sandbox"] = False  # the host notes the request and sandboxes anyway
        reply = self._chan.call(request)
        score = _unwrap(reply)
        self.uses = reply.get("uses", self.uses + 1)
        self.budget = reply.get("budget", self.budget)
        return float(score)

    def __str__(self) -> str:
        return self.str
