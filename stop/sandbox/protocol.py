"""The improver's calls to the host, spelled once.

An improver runs in a sandbox with proxies (stop/sandbox/proxies.py) for its
`language_model` and `utility`; each call crosses the sandbox's pipe as a request and
comes back as a reply. The proxies build requests with `request` and read replies with
`unwrap`; the host (stop/host/improver.py, `ImproverHost`) answers with `ok` and `refuse`.
Standard library only (and stop.errors): the sandboxed side imports it before anything.

Requests: `{"op": <Op>, ...fields}`, the fields of each op as `Fields[op]` documents
them (the host validates them strictly). Replies: `{"ok": value, ...state}`, where state
is the host's count the proxy mirrors (`budget`, `uses`); or `{"error": message, "kind":
<Refusal>}`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypedDict

from stop.errors import BudgetExhausted, StopError


class Op(str, Enum):
    BATCH_PROMPT = "batch_prompt"  # n messages -> n completions
    BATCH_EDIT = "batch_edit"  # n messages -> n programs (edits to `program` applied)
    UTILITY = "utility"  # a program -> its score (or, with feedback, its evaluation)
    RANK = "rank"  # programs -> their indices, most promising first (free)
    RECORD = "record"  # JSON data saved with the run
    SUBMIT = "submit"  # one message -> a handle at once; its reply comes through WAIT
    SUBMIT_SCORE = "submit_score"  # a program -> a handle; its evaluation comes through WAIT
    WAIT = "wait"  # handles -> the first of them to finish, or None past the timeout


class Refusal(str, Enum):
    BUDGET = "budget"  # a budget is spent: the proxy raises BudgetExhausted
    MALFORMED = "malformed"  # the request does not have its op's fields
    UNKNOWN_OP = "unknown_op"
    REFUSED = "refused"  # well-formed, but the host will not do it (too large, ...)
    HOST = "host"  # the host failed (a bug of ours, logged there)


class BatchPrompt(TypedDict):
    expertise: str
    messages: list[str]
    temperature: float


class BatchEdit(BatchPrompt):
    program: str


class Utility(TypedDict, total=False):
    program: str  # required
    use_sandbox: bool  # STOP's bait: recorded, and the sandbox stays on
    feedback: bool  # reply with status, detail and feedback, not just the score


class Rank(TypedDict):
    programs: list[str]


class Record(TypedDict):
    name: str  # [a-z][a-z0-9_]{0,39}
    data: Any


class Submit(TypedDict, total=False):
    expertise: str  # required
    message: str  # required
    temperature: float  # required
    program: str | None  # given: the reply is edits to it, delivered as the program


class SubmitScore(TypedDict):
    program: str


class Wait(TypedDict, total=False):
    handles: list[int]  # required: handles not yet delivered
    timeout: float | None  # seconds; None: until one finishes


class Delivered(TypedDict):
    """WAIT's value: the handle, and its reply text, program (None: nothing usable) or
    evaluation dict; `error` instead if the request failed."""

    handle: int
    value: Any
    error: str | None


Fields: dict[Op, type] = {
    Op.BATCH_PROMPT: BatchPrompt,
    Op.BATCH_EDIT: BatchEdit,
    Op.UTILITY: Utility,
    Op.RANK: Rank,
    Op.RECORD: Record,
    Op.SUBMIT: Submit,
    Op.SUBMIT_SCORE: SubmitScore,
    Op.WAIT: Wait,
}


def request(op: Op, **fields: Any) -> dict[str, Any]:
    return {"op": op.value, **fields}


def unscored(status: str, detail: str) -> dict[str, Any]:
    """`utility.evaluate`'s answer for a program nothing ran (no program given, the budget
    spent): the shape of an evaluation, score 0."""
    return {
        "score": 0.0,
        "status": status,
        "detail": detail,
        "seconds": 0.0,
        "metrics": {},
        "feedback": [],
    }


def ok(value: Any, **state: Any) -> dict[str, Any]:
    return {"ok": value, **state}


def refuse(kind: Refusal, message: str) -> dict[str, Any]:
    return {"error": message, "kind": kind.value}


def unwrap(reply: dict[str, Any]) -> Any:
    """A reply's value, or the refusal raised: BudgetExhausted, else StopError."""
    if "error" in reply:
        if reply.get("kind") == Refusal.BUDGET.value:
            raise BudgetExhausted(reply["error"])
        raise StopError(reply["error"])
    return reply["ok"]
