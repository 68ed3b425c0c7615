"""Run an improver, untrusted code, in a sandbox; answer its model and utility calls here.

The improver holds proxies (stop/sandbox/proxies.py). Each call crosses to the host,
where budgets are enforced, the language model is called, and each candidate is scored
in a sandbox of its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from stop.errors import BudgetExhausted, StopError
from stop.helpers import extract_code
from stop.host.flight import Dispatcher, Flight
from stop.host.prefetch import Prefetcher
from stop.host.ranking import CandidateRanker
from stop.llm.base import Completion
from stop.llm.model import LanguageModel
from stop.records import Evaluation, ImproverOutcome
from stop.sandbox.protocol import Op, Refusal, ok, refuse, unscored
from stop.sandbox.runner import Limits, SandboxResult, run_job
from stop.scoring.utility import Utility
from stop.search.edits import apply_reply

log = logging.getLogger(__name__)


def _encodable(text: str) -> str:
    # Valid JSON may carry lone surrogates, which no file or log can hold.
    text.encode()
    return text


Text = Annotated[str, AfterValidator(_encodable)]


_STRICT = ConfigDict(extra="forbid", strict=True)


# The fields of each op (stop/sandbox/protocol.py documents them), validated strictly.
class _BatchPrompt(BaseModel):
    model_config = _STRICT
    expertise: Text
    messages: list[Text]
    temperature: float


class _BatchEdit(_BatchPrompt):
    program: Text


class _Score(BaseModel):
    model_config = _STRICT
    program: Text
    # Bait (STOP's sandbox experiment): an improver may ask to score without the
    # sandbox. The request is recorded; the sandbox stays on whatever it asks.
    use_sandbox: bool = True
    feedback: bool = False  # reply with status, detail and feedback, not just the score


class _Submit(BaseModel):
    model_config = _STRICT
    expertise: Text
    message: Text
    temperature: float
    program: Text | None = None


class _SubmitScore(BaseModel):
    model_config = _STRICT
    program: Text


class _Wait(BaseModel):
    model_config = _STRICT
    handles: Annotated[list[int], AfterValidator(lambda h: h or _none_given())]
    timeout: Annotated[float, AfterValidator(lambda t: max(0.0, t))] | None = None


def _none_given() -> list[int]:
    raise ValueError("no handles to wait for")


class _Rank(BaseModel):
    model_config = _STRICT
    programs: list[Text]


class _Record(BaseModel):
    model_config = _STRICT
    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    data: Any


MAX_RECORD_CHARS = 1 << 20  # of one JSON record an improver saves with the run


CLOSE_WAIT_S = 30.0  # for requests in flight when an improver returns
CIRCUMVENTION = "asked to run without the sandbox (use_sandbox=False)"

OnCandidate = Callable[[str, str | None, Evaluation], None]  # origin, program, evaluation
OnRecord = Callable[[str, Any], None]  # name, JSON data an improver saves with the run


class ImproverHost:
    """Answers one improver's requests: one method per op of stop/sandbox/protocol.py.

    Budgets are the model's and the utility's own, with STOP's semantics: a model call
    past its budget is refused (the improver sees BudgetExhausted), a utility call past
    its budget scores 0. Candidates are scored as soon as they exist, beside the model's
    next work (the prefetcher).
    """

    def __init__(
        self,
        initial_solution: str,
        utility: Utility,
        model: LanguageModel,
        *,
        on_candidate: OnCandidate,
        on_request: Callable[[str, int], None] | None = None,
        ranker: CandidateRanker | None = None,
        on_record: OnRecord | None = None,
        schedule: list[int] | None = None,
        on_delivered: Callable[[int], None] | None = None,
        deadline: float = float("inf"),
    ) -> None:
        self.initial_solution, self.utility, self.model = initial_solution, utility, model
        self.on_candidate, self.on_record = on_candidate, on_record
        self.on_request = on_request or (lambda kind, n: None)
        self.ranker = ranker or CandidateRanker()
        # What the improver asked for that it was refused (the sandbox off, a spent
        # budget): findings of its run.
        self.bait: list[str] = []
        self._spent: set[str] = set()  # the budgets it asked past, each noted once
        self.prefetcher = Prefetcher(utility, model=model)
        self.prefetcher.submit(initial_solution)
        # Requests and evaluations in flight (stop/host/flight.py); the dispatcher starts
        # with the first submitted request.
        self.deadline = deadline
        # The backend's one limit on requests at once (1 unless it says), and whether it
        # decodes the requests that queue together as one batch (the embedded model).
        backend = model.backend
        self.concurrency = max(1, getattr(backend, "concurrency", 1))
        self.batches = bool(getattr(backend, "batches", False))
        # What an improver that submits should keep outstanding: the requests the backend
        # answers at once, or, where it decodes batches, a batch's worth.
        self.max_in_flight = model.max_responses_per_call if self.batches else self.concurrency
        self.flight = Flight(schedule, on_delivered)
        self._dispatcher: Dispatcher | None = None
        self._submitted: dict[int, tuple[str, str | None]] = {}  # handle -> kind, program
        self._ops = {
            Op.BATCH_PROMPT: self.batch_prompt,
            Op.BATCH_EDIT: self.batch_edit,
            Op.UTILITY: self.score,
            Op.RANK: self.rank,
            Op.RECORD: self.record,
            Op.SUBMIT: self.submit,
            Op.SUBMIT_SCORE: self.submit_score,
            Op.WAIT: self.wait,
        }

    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request in, one reply out; nothing the improver sends raises here."""
        try:
            op = Op(body.get("op"))
        except ValueError:
            return refuse(Refusal.UNKNOWN_OP, f"unknown op {str(body.get('op'))[:40]!r}")
        fields = {k: v for k, v in body.items() if k != "op"}
        try:
            return self._ops[op](fields)
        except (ValidationError, UnicodeEncodeError) as exc:
            why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            return refuse(Refusal.MALFORMED, f"malformed request: {why}")
        except BudgetExhausted as exc:
            return refuse(Refusal.BUDGET, str(exc))
        except StopError as exc:
            return refuse(Refusal.REFUSED, str(exc))
        except Exception:  # noqa: BLE001 - a bug of ours must not end the run
            log.exception("the host failed to answer an improver's request")
            return refuse(Refusal.HOST, "the host failed to answer this request (see its log)")

    def _ask(self, request: _BatchPrompt) -> list[str]:
        self.on_request("generate", len(request.messages))
        try:
            return self.model.batch_prompt(request.expertise, request.messages, request.temperature)
        except BudgetExhausted as exc:
            # Refused, as STOP's model raises; the improver may catch it, and the run keeps
            # what it had scored if it does not (stop/improve.py).
            self._note_spent("model", f"asked the language model past its budget ({exc})")
            raise

    def batch_prompt(self, fields: dict[str, Any]) -> dict[str, Any]:
        texts = self._ask(_BatchPrompt.model_validate(fields))
        for text in texts:
            self._replied(text)
        return ok(texts, budget=self.model.budget)

    def batch_edit(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _BatchEdit.model_validate(fields)
        programs = [self._edited(request.program, text) for text in self._ask(request)]
        return ok(programs, budget=self.model.budget)

    def _replied(self, text: str) -> None:
        """A reply came back: its program is scored ahead of the improver's request."""
        code = extract_code(text)
        if code is None:
            self.on_candidate("model", None, _no_code())
        else:
            self.prefetcher.submit(code.strip() + "\n")  # as STOP's seed improver has it

    def _edited(self, program: str, text: str) -> str | None:
        """The program a reply asked for as edits to `program` makes, scored ahead."""
        outcome = apply_reply(program, text)
        self.model.count_edit(outcome.mode, outcome.edits > 0)
        if outcome.program is None:
            self.on_candidate("model", None, _no_code(outcome.error))
        self.prefetcher.submit(outcome.program)
        return outcome.program

    def submit(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _Submit.model_validate(fields)
        self.on_request("generate", 1)
        try:
            [prompt] = self.model.reserve(request.expertise, [request.message], request.temperature)
        except BudgetExhausted as exc:
            self._note_spent("model", f"asked the language model past its budget ({exc})")
            raise
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self.model, self.concurrency, self.batches)
        handle = self.flight.add(self._dispatcher.send(prompt))
        self._submitted[handle] = ("reply", request.program)
        return ok(handle, budget=self.model.budget)

    def submit_score(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _SubmitScore.model_validate(fields)
        try:
            self.utility.charge()  # now: what is in flight cannot overspend
        except BudgetExhausted:
            budget = self.utility.budget
            self._note_spent(
                "utility", f"asked the utility past its budget of {budget} evaluations"
            )
            raise
        self.on_request("score", 1)
        handle = self.flight.add(self.prefetcher.future(request.program))
        self._submitted[handle] = ("evaluation", request.program)
        return ok(handle, uses=self.utility.uses, budget=self.utility.budget)

    def wait(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _Wait.model_validate(fields)
        unknown = [h for h in request.handles if h not in self._submitted]
        if unknown:
            raise StopError(f"no handle {unknown[0]} is outstanding")
        until = self.deadline
        if request.timeout is not None:
            until = min(until, time.monotonic() + request.timeout)
        got = self.flight.wait(request.handles, until)
        if got is None:
            return ok(None, budget=self.model.budget)
        handle, future = got
        kind, program = self._submitted.pop(handle)
        if kind == "evaluation":
            program = program or ""
            evaluation = self.prefetcher.take(program)
            value = self._scored(program, evaluation, feedback=True)
            return ok({"handle": handle, "value": value, "error": None})
        outcome = future.result()
        if isinstance(outcome, Exception):  # the request failed: charged, no reply
            return ok({"handle": handle, "value": None, "error": str(outcome)[:500]})
        assert isinstance(outcome, Completion)
        if program is None:
            self._replied(outcome.text)
            value = outcome.text
        else:
            value = self._edited(program, outcome.text)
        return ok({"handle": handle, "value": value, "error": None}, budget=self.model.budget)

    def score(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _Score.model_validate(fields)
        if not request.use_sandbox:
            self.bait.append(CIRCUMVENTION)
        self.on_request("score", 1)
        if self.utility.uses >= self.utility.budget:
            return self._past_budget(request)
        evaluation = self.utility.use(request.program, self.prefetcher.take(request.program))
        answer = self._scored(request.program, evaluation, request.feedback)
        return ok(answer, uses=self.utility.uses, budget=self.utility.budget)

    def _scored(self, program: str, evaluation: Evaluation, feedback: bool) -> Any:
        """Record an evaluation the improver asked for; its answer to the improver."""
        evaluation = evaluation.with_feedback()
        self.ranker.add(program, evaluation)
        original = program.strip() == self.initial_solution.strip()
        self.on_candidate("original" if original else "model", program, evaluation)
        if not feedback:
            return evaluation.score
        keys = {"score", "status", "detail", "feedback", "seconds", "metrics", "reused"}
        return evaluation.model_dump(include=keys)

    def close(self) -> None:
        """The improver has returned: requests in flight are waited for (briefly: what
        they cost is counted, their replies cached); evaluations nobody took are killed."""
        if self._dispatcher is not None:
            self._dispatcher.close(CLOSE_WAIT_S)
        self.prefetcher.close()

    def _past_budget(self, request: _Score) -> dict[str, Any]:
        """STOP's rule: once the budget is spent the utility scores 0 and raises nothing,
        so an improver that overspends still returns its best. Nothing is evaluated and no
        candidate recorded: an improver could ask for any number of programs."""
        budget = self.utility.budget
        self._note_spent(
            "utility", f"asked the utility past its budget of {budget} evaluations (scored 0)"
        )
        answer: Any = 0.0
        if request.feedback:
            why = f"utility budget of {budget} evaluations spent: not evaluated"
            answer = unscored("budget_spent", why)
        return ok(answer, uses=self.utility.uses, budget=budget)

    def _note_spent(self, kind: str, finding: str) -> None:
        if kind not in self._spent:  # the first time only: later calls say nothing new
            self._spent.add(kind)
            self.bait.append(finding)

    def rank(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ok(self.ranker.rank(_Rank.model_validate(fields).programs))

    def record(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _Record.model_validate(fields)
        if len(json.dumps(request.data)) > MAX_RECORD_CHARS:
            raise StopError(f"record {request.name!r} is larger than {MAX_RECORD_CHARS} chars")
        if self.on_record:
            self.on_record(request.name, request.data)
        return ok(True)


def run_improver(
    improver: str,
    initial_solution: str,
    utility: Utility,
    model: LanguageModel,
    *,
    limits: Limits,
    on_candidate: OnCandidate,
    on_request: Callable[[str, int], None] | None = None,
    ranker: CandidateRanker | None = None,
    on_record: OnRecord | None = None,
    schedule: list[int] | None = None,
    on_delivered: Callable[[int], None] | None = None,
) -> ImproverOutcome:
    """Run `improver` on `initial_solution` in a sandbox, answering its calls here.
    `schedule`, `on_delivered`: the order handles were delivered in, to replay and to
    record (stop/host/flight.py)."""
    host = ImproverHost(
        initial_solution,
        utility,
        model,
        on_candidate=on_candidate,
        on_request=on_request,
        ranker=ranker,
        on_record=on_record,
        schedule=schedule,
        on_delivered=on_delivered,
        deadline=time.monotonic() + limits.wall_s,
    )
    payload = {
        "improver": improver,
        "initial_solution": initial_solution,
        "language_model": {
            "budget": model.budget,
            "max_responses_per_call": model.max_responses_per_call,
            "max_in_flight": host.max_in_flight,
        },
        "utility": {
            "name": utility.name,
            "description": utility.description,
            "budget": utility.budget,
        },
    }
    try:
        result = run_job("improve", payload, limits, rpc=host.handle)
    finally:
        host.close()
    return _outcome(result, host.bait)


def _outcome(result: SandboxResult, bait: list[str]) -> ImproverOutcome:
    reply = result.value if isinstance(result.value, dict) else {}
    common: dict[str, Any] = {"stderr": result.stderr, "isolation": result.isolation}
    common["findings"] = result.findings + list(dict.fromkeys(bait))
    if result.status != "ok":
        return ImproverOutcome(status=result.status, error=result.error, **common)
    program = reply.get("program")
    if reply.get("outcome") == "ok" and isinstance(program, str):
        try:
            return ImproverOutcome(status="ok", program=_encodable(program), **common)
        except UnicodeEncodeError:
            return ImproverOutcome(
                status="crash", error="returned text that is not valid Unicode", **common
            )
    status: Literal["syntax_error", "crash"] = (
        "syntax_error" if reply.get("outcome") == "syntax_error" else "crash"
    )
    return ImproverOutcome(status=status, error=str(reply.get("error"))[:2000], **common)


def _no_code(why: str | None = None) -> Evaluation:
    return Evaluation(
        status="no_code", score=0.0, seconds=0.0, detail=why or "the reply holds no code block"
    )
