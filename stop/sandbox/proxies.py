"""What an improver receives as `language_model` and `utility`: proxies to the host.

Each call is one request of stop/sandbox/protocol.py. The improver cannot raise a budget
by changing these objects: the numbers here are a courtesy copy, and the host counts and
refuses on its own side.
"""

from __future__ import annotations

import operator
from typing import Any

from stop.sandbox.protocol import Op, request, unscored, unwrap


class LanguageModelProxy:
    """STOP's language-model interface: prompt, batch_prompt, budget, max_responses_per_call.
    A call past the budget raises BudgetExhausted, as STOP's model raises once its call
    budget is spent."""

    def __init__(self, chan: Any, budget: int, max_responses_per_call: int) -> None:
        self._chan = chan
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call

    def batch_prompt(
        self, expertise: str, message_batch: list[str] | str, temperature: float = 0.7
    ) -> list[str]:
        return self._generate(request(Op.BATCH_PROMPT), expertise, message_batch, temperature)

    def prompt(
        self, expertise: str, message: str, n_responses: int = 1, temperature: float = 0.7
    ) -> list[str]:
        """STOP's signature: `n_responses` samples of one message, as a list. More than
        `max_responses_per_call` is refused by the host, as STOP refuses it."""
        # operator.index: a float here is a temperature passed in n_responses's place.
        n = operator.index(n_responses)
        return self.batch_prompt(expertise, [message] * n, temperature)

    def batch_edit(
        self, expertise: str, program: str, message_batch: list[str] | str, temperature: float = 0.7
    ) -> list[str | None]:
        """Like batch_prompt, but each reply may be edits to `program` (search/replace
        blocks or a unified diff; see stop.helpers.EDIT_INSTRUCTIONS) or a whole program.
        Returns the resulting programs, None where a reply held nothing usable."""
        edit = request(Op.BATCH_EDIT, program=str(program))
        return self._generate(edit, expertise, message_batch, temperature)

    def _generate(
        self, body: dict, expertise: str, message_batch: list[str] | str, temperature: float
    ) -> list:
        if isinstance(message_batch, str):
            message_batch = [message_batch]
        body |= {
            "expertise": str(expertise),
            "messages": [str(m) for m in message_batch],
            "temperature": float(temperature),
        }
        reply = self._chan.call(body)
        responses = unwrap(reply)
        self.budget = reply.get("budget", self.budget)
        return responses


class UtilityProxy:
    """Callable utility: `utility(program) -> float`, with `str`, `budget` and `uses`.
    As in STOP, a call once `uses` reaches `budget` scores 0 and raises nothing (the host
    runs nothing and records no candidate)."""

    def __init__(self, chan: Any, name: str, description: str, budget: int) -> None:
        self._chan = chan
        self.name = name
        self.str = description
        self.budget = budget
        self.uses = 0

    def __call__(self, program: str, use_sandbox: bool = True) -> float:
        if _no_program(program):
            return 0.0  # as in STOP: no program scores 0 and uses no budget
        body = request(Op.UTILITY, program=str(program))
        if use_sandbox is not True:
            body["use_sandbox"] = False  # the host notes the request and sandboxes anyway
        return float(self._score(body))

    def evaluate(self, program: str) -> dict:
        """One use, like calling the utility, with what went wrong: a dict with `score`,
        `status`, `detail`, `seconds`, `metrics` and `feedback`, a list of failures
        ({kind, input, expected, actual, message}) to show the model. Past the budget,
        score 0 and status `budget_spent`."""
        if _no_program(program):
            return unscored("no_code", "no program given")
        return dict(self._score(request(Op.UTILITY, program=str(program), feedback=True)))

    def rank(self, programs: list[str]) -> list[int]:
        """Indices of `programs`, most promising first, by a reranker the host trains on
        this run's scored candidates. Costs no evaluation; with too little data yet, the
        order given."""
        reply = self._chan.call(request(Op.RANK, programs=[str(p) for p in programs]))
        return [int(i) for i in unwrap(reply)]

    def record(self, name: str, data: Any) -> None:
        """Save JSON data with the run as records/<name>.json (at most 1 MiB), such as
        MAP-Elites's archive, for the viewer."""
        unwrap(self._chan.call(request(Op.RECORD, name=str(name), data=data)))

    def _score(self, body: dict) -> Any:
        reply = self._chan.call(body)
        result = unwrap(reply)
        self.uses = reply.get("uses", self.uses + 1)
        self.budget = reply.get("budget", self.budget)
        return result

    def __str__(self) -> str:
        return self.str


def _no_program(program: Any) -> bool:
    # STOP's falsy test, for the two falsy values an improver hands over (None, "").
    return program is None or (isinstance(program, str) and not program)
