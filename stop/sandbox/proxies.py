"""What an improver receives as `language_model` and `utility`: proxies to the host.

Each call is one request of stop/sandbox/protocol.py. The improver cannot raise a budget
by changing these objects: the numbers here are a courtesy copy, and the host counts and
refuses on its own side.
"""

from __future__ import annotations

import operator
from typing import Any

from stop.sandbox.protocol import Op, request, unscored, unwrap


class Pending:
    """A request or an evaluation in flight: `language_model.wait` hands it back done,
    with `result` (the reply's text; the program, for a request with `program`; the
    evaluation dict, for `utility.submit`) or `error` (the request failed). `tag` is
    the improver's own, kept as given."""

    def __init__(self, handle: int, kind: str, tag: Any) -> None:
        self.handle, self.kind, self.tag = handle, kind, tag
        self.done = False
        self.result: Any = None
        self.error: str | None = None

    def __repr__(self) -> str:
        state = "error" if self.error else "done" if self.done else "pending"
        return f"<Pending {self.kind} #{self.handle} {state}>"


class LanguageModelProxy:
    """STOP's language-model interface: prompt, batch_prompt, budget, max_responses_per_call.
    A call past the budget raises BudgetExhausted, as STOP's model raises once its call
    budget is spent.

    Beside it, requests kept in flight: `submit` sends one and returns a Pending at once;
    `wait` returns the first of some Pendings to finish (utility.submit's too). Keep
    `max_in_flight` outstanding to use the backend fully."""

    def __init__(
        self, chan: Any, budget: int, max_responses_per_call: int, max_in_flight: int = 1
    ) -> None:
        self._chan = chan
        self.budget = budget
        self.max_responses_per_call = max_responses_per_call
        self.max_in_flight = max_in_flight

    def submit(
        self,
        expertise: str,
        message: str,
        temperature: float = 0.7,
        program: str | None = None,
        tag: Any = None,
    ) -> Pending:
        """One sample of `message`, sent now; with `program`, the reply may be edits to it
        (as batch_edit) and the result is the program they make, None if nothing usable.
        Raises BudgetExhausted if the budget cannot cover it."""
        body = request(
            Op.SUBMIT,
            expertise=str(expertise),
            message=str(message),
            temperature=float(temperature),
            program=None if program is None else str(program),
        )
        reply = self._chan.call(body)
        handle = unwrap(reply)
        self.budget = reply.get("budget", self.budget)
        return Pending(int(handle), "reply", tag)

    def wait(self, pending: Any, timeout: float | None = None) -> Pending | None:
        """The first of `pending` (Pendings not yet handed back) to finish, marked done;
        None if `timeout` seconds pass first."""
        return wait(self._chan, list(pending), timeout, self)

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


def wait(
    chan: Any, pending: list[Pending], timeout: float | None, model: LanguageModelProxy | None
) -> Pending | None:
    by_handle = {p.handle: p for p in pending if isinstance(p, Pending) and not p.done}
    if not by_handle:
        raise ValueError("wait needs at least one Pending that is not done")
    body = request(Op.WAIT, handles=list(by_handle))
    if timeout is not None:
        body["timeout"] = float(timeout)
    reply = chan.call(body)
    delivered = unwrap(reply)
    if model is not None:
        model.budget = reply.get("budget", model.budget)
    if delivered is None:
        return None
    done = by_handle[int(delivered["handle"])]
    done.done, done.result, done.error = True, delivered.get("value"), delivered.get("error")
    return done


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

    def submit(self, program: str, tag: Any = None) -> Pending:
        """One use, like `evaluate`, started now: `language_model.wait` hands the Pending
        back with the evaluation dict as its result. Raises BudgetExhausted past the
        budget (the use is charged when submitted)."""
        reply = self._chan.call(request(Op.SUBMIT_SCORE, program=str(program)))
        handle = unwrap(reply)
        self.uses = reply.get("uses", self.uses + 1)
        self.budget = reply.get("budget", self.budget)
        return Pending(int(handle), "evaluation", tag)

    def wait(self, pending: Any, timeout: float | None = None) -> Pending | None:
        """As language_model.wait."""
        return wait(self._chan, list(pending), timeout, None)

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
