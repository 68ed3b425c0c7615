"""Run an improver, untrusted code, in a sandbox; answer its model and utility calls here.

The improver holds proxies (stop/sandbox/proxies.py). Each call crosses to the host,
where budgets are enforced, the language model is called, and each candidate is scored
in a sandbox of its own.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from stop.errors import BadInput, BudgetExhausted, StopError
from stop.helpers import extract_code
from stop.host.prefetch import Prefetcher
from stop.host.ranking import CandidateRanker
from stop.llm.model import LanguageModel
from stop.records import Evaluation, ImproverOutcome
from stop.sandbox.protocol import Op, Refusal, ok, refuse, unscored
from stop.sandbox.runner import Limits, SandboxResult, run_job
from stop.scoring.utility import Utility
from stop.search.edits import apply_reply
from stop.sources import read_source

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


class _Rank(BaseModel):
    model_config = _STRICT
    programs: list[Text]


class _Record(BaseModel):
    model_config = _STRICT
    name: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    data: Any


MAX_RECORD_CHARS = 1 << 20  # of one JSON record an improver saves with the run


def load_improver(spec: str, runs_dir: Path = Path("runs")) -> str:
    """Source of a built-in improver (`seed`), an improver file, or a saved generation
    (`<run-id>:<gen>`)."""
    if ":" in spec and not spec.endswith(".py"):
        from stop.store import resolve_generation

        spec = str(resolve_generation(spec, runs_dir))
    if spec.endswith(".py") or "/" in spec:
        source = read_source(Path(spec), "improver")
    else:
        resource = importlib.resources.files("seed_improvers").joinpath(f"{spec}.py")
        if not resource.is_file():
            raise BadInput(
                f"unknown improver {spec!r}: give a built-in name (seed), a .py file "
                "or <run-id>:<generation>"
            )
        source = resource.read_text()
    try:
        compile(source, spec, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BadInput(
            f"improver {spec} has a syntax error at line {exc.lineno}: {exc.msg}"
        ) from exc
    return source


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
    ) -> None:
        self.initial_solution, self.utility, self.model = initial_solution, utility, model
        self.on_candidate, self.on_record = on_candidate, on_record
        self.on_request = on_request or (lambda kind, n: None)
        self.ranker = ranker or CandidateRanker()
        # What the improver asked for that it was refused (the sandbox off, a spent
        # budget): findings of its run.
        self.bait: list[str] = []
        self._spent: set[str] = set()  # the budgets it asked past, each noted once
        self.prefetcher = Prefetcher(utility)
        self.prefetcher.submit(initial_solution)
        self._ops = {
            Op.BATCH_PROMPT: self.batch_prompt,
            Op.BATCH_EDIT: self.batch_edit,
            Op.UTILITY: self.score,
            Op.RANK: self.rank,
            Op.RECORD: self.record,
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
            code = extract_code(text)
            if code is None:
                self.on_candidate("model", None, _no_code())
            else:
                self.prefetcher.submit(code.strip() + "\n")  # as STOP's seed improver has it
        return ok(texts, budget=self.model.budget)

    def batch_edit(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _BatchEdit.model_validate(fields)
        programs = []
        for text in self._ask(request):
            outcome = apply_reply(request.program, text)
            self.model.count_edit(outcome.mode, outcome.edits > 0)
            if outcome.program is None:
                self.on_candidate("model", None, _no_code(outcome.error))
            self.prefetcher.submit(outcome.program)
            programs.append(outcome.program)
        return ok(programs, budget=self.model.budget)

    def score(self, fields: dict[str, Any]) -> dict[str, Any]:
        request = _Score.model_validate(fields)
        if not request.use_sandbox:
            self.bait.append(CIRCUMVENTION)
        self.on_request("score", 1)
        # Past the budget there is no prefetched evaluation worth waiting for; the utility
        # refuses the use itself (and may note it: the meta-utility does).
        spent = self.utility.uses >= self.utility.budget
        evaluated = None if spent else self.prefetcher.take(request.program)
        try:
            evaluation = self.utility.use(request.program, evaluated)
        except BudgetExhausted:
            return self._past_budget(request)
        self.ranker.add(request.program, evaluation)
        original = request.program.strip() == self.initial_solution.strip()
        self.on_candidate("original" if original else "model", request.program, evaluation)
        answer: Any = evaluation.score
        if request.feedback:
            keys = {"score", "status", "detail", "feedback", "seconds", "metrics"}
            answer = evaluation.model_dump(include=keys)
        return ok(answer, uses=self.utility.uses, budget=self.utility.budget)

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
) -> ImproverOutcome:
    """Run `improver` on `initial_solution` in a sandbox, answering its calls here."""
    host = ImproverHost(
        initial_solution,
        utility,
        model,
        on_candidate=on_candidate,
        on_request=on_request,
        ranker=ranker,
        on_record=on_record,
    )
    payload = {
        "improver": improver,
        "initial_solution": initial_solution,
        "language_model": {
            "budget": model.budget,
            "max_responses_per_call": model.max_responses_per_call,
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
        host.prefetcher.close()
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
