"""Every shape stop persists, in one place: run configs, candidates, generations, results,
usage, model exchanges and the event log.

Each record rejects unknown keys, and the top-level ones carry the run format's version,
so a run directory can always be read back or refused with a reason. This module imports
only pydantic and the standard library: every other layer may import it.

Format 2 (this one) gave configs one budget type and typed the generations' candidates;
format 1 runs are refused by `stop runs`, `lineage` and `--resume` with that reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 2

# rejected: unrun, for changing what the target fixes (outside its EVOLVE-BLOCKs)
Status = Literal["ok", "wrong_answer", "timeout", "crash", "syntax_error", "no_code", "rejected"]
Sandbox = Literal["jail", "weak"]  # what ran a run's untrusted code
FeedbackKind = Literal["wrong_answer", "exception", "timeout", "syntax_error"]

MAX_FEEDBACK = 3  # failures reported per evaluation: enough to fix, too few to memorize
FEEDBACK_CHARS = 300  # of each input, output and message


class Shape(BaseModel):
    """A nested record: strict about its keys, versioned by the record that holds it."""

    model_config = ConfigDict(extra="forbid")


class Record(Shape):
    """A top-level record, one file or one log line of its own."""

    format_version: int = FORMAT_VERSION


def trim(text: str, limit: int = FEEDBACK_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object) -> str:
    """A value as JSON (a string in quotes: "44" is not 44), trimmed."""
    return trim(json.dumps(value, default=repr))


# --- scoring ------------------------------------------------------------------------


class Feedback(Shape):
    """One failure, structured so that an improver can put it in front of the model
    (LangProp-style): the input, what was expected (where that is not hidden data), what
    came back, or the exception and a trimmed traceback."""

    kind: FeedbackKind
    input: str | None = None
    expected: str | None = None
    actual: str | None = None
    message: str | None = None


_FEEDBACK_KIND: dict[str, FeedbackKind] = {
    "crash": "exception",
    "no_code": "syntax_error",
    "rejected": "wrong_answer",
}


class Evaluation(Shape):
    status: Status
    score: float  # 0 unless status is "ok"
    seconds: float  # wall time of the evaluation, sandbox start-up included
    detail: str | None = None  # why it failed, trimmed
    metrics: dict[str, float] = {}
    findings: list[str] = []  # what the sandbox's guard blocked or noticed
    feedback: list[Feedback] = []  # at most MAX_FEEDBACK failures, for improvers
    # Not run again: "run", the same program (comments and whitespace aside) was
    # evaluated earlier in this run; "cache", the evaluation cache had it (a resume, a
    # replay). Only deterministic utilities reuse.
    reused: Literal["run", "cache"] | None = None
    # Timed while the embedded model was generating on the same cores: a ranking for the
    # improver, never shown as a score (the run's figures are the re-scored ones).
    provisional: bool = False

    def with_feedback(self) -> Evaluation:
        """This evaluation with at least one feedback entry when it failed: a utility
        that reports no structured failures still says what went wrong."""
        if self.feedback or self.status == "ok":
            return self
        # The other failed statuses are feedback kinds of their own.
        kind = cast(FeedbackKind, _FEEDBACK_KIND.get(self.status, self.status))
        return self.model_copy(
            update={"feedback": [Feedback(kind=kind, message=trim(self.detail or self.status))]}
        )


class Finding(Shape):
    """What a source tries, read without running it (stop/scoring/audit.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str  # disables_sandbox, touches_budget, utility_internals, risky_import, dynamic_code
    line: int
    text: str


class RankStats(Shape):
    requests: int = 0  # rank calls
    ranked: int = 0  # distinct programs ranked
    saved: int = 0  # ranked programs never evaluated: evaluations the ranking saved
    fits: int = 0
    unfitted: int = 0  # rank calls answered in the given order: too little data yet
    hard_negatives: int = 0  # in the latest fit


class Usage(Shape):
    calls: int = 0  # completions requested, cached and failed ones included
    cached: int = 0
    failed: int = 0  # requested but failed (after the SDK's retries): charged, no text
    truncated: int = 0  # cut at max_tokens by the server, or at max_reply_chars by the host
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Replies asked for as edits (batch_edit): edits that applied cleanly; edits that did
    # not, replaced by the full program the reply also held; a full program instead of
    # edits; nothing usable.
    edits_applied: int = 0
    edits_fell_back: int = 0
    edits_rewrites: int = 0
    edits_failed: int = 0
    # Money at the run's prices (stop/llm/prices.py; 0 without prices): `usd` is what the
    # run's completions cost, replayed ones included, so that a cap (--max-usd) ends a
    # resumed run where the uninterrupted one ended; `usd_cached` is the part of it that
    # came from the response cache, not paid again.
    usd: float = 0.0
    usd_cached: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f: getattr(self, f) + getattr(other, f) for f in Usage.model_fields})


# --- configuration ------------------------------------------------------------------


class Prices(Shape):
    """USD per million tokens of one model, and where the figure comes from and when
    (stop/llm/prices.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    source: str | None = None


class Money(Shape):
    """A run's money: the prices it pays and its cap (--max-usd); None: no cap."""

    prices: Prices
    max_usd: float | None = Field(None, gt=0)


class Budget(Shape):
    """What one improver run may spend: the improve run's, a self-improvement round's, one
    meta-utility test's. The host enforces every field; the improver sees them."""

    model_calls: int  # completions
    # Requests (prompt or batch_prompt calls) in all, as STOP counts its model budget;
    # None: no cap. When set, it is the `language_model.budget` an improver reads.
    model_requests: int | None = None
    max_responses_per_call: int
    max_tokens: int  # per response
    model_tokens: int | None = None  # prompt and completion tokens in all; None: no cap
    evaluations: int  # uses of the utility
    timeout_s: float = 600.0  # the improver's wall clock, model calls included


class ModelSettings(Shape):
    """Which backend, and its options as that backend's own options model validates them
    when it is built (stop/llm/__init__.py). Options may be given as keywords:
    `ModelSettings(backend="scripted", script=path)`."""

    backend: str = "local"
    options: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _options_as_keywords(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) - {"backend", "options"}:
            given = {k: v for k, v in data.items() if k not in ("backend", "options")}
            options = {**data.get("options", {}), **given}
            data = {"backend": data.get("backend", "local"), "options": options}
        return data

    def option(self, name: str) -> Any:
        return self.options.get(name)


class UtilityOptions(Shape):
    entry: str | None = None  # the function to time (speed)
    inputs: str | None = None  # JSON list of argument lists (speed)
    timeout_s: float | None = None  # per evaluation; None: the utility chooses
    custom: dict[str, Any] = {}  # --utility-option key=value, as the utility validated it


class ImproveConfig(Record):
    target: Path
    utility: str = "speed"
    utility_options: UtilityOptions = UtilityOptions()
    improver: str = "seed"
    model: ModelSettings = ModelSettings()
    budget: Budget
    seed: int = 0
    runs_dir: Path = Path("runs")
    use_cache: bool = True
    sandbox: Sandbox = "jail"  # what ran the untrusted code; set by the run itself
    money: Money | None = None  # None: the model costs nothing, or its price is unknown


class SelfImproveConfig(Record):
    tasks: list[str] = ["lpn"]
    rounds: int = 5
    tests: int  # meta-utility tests (k), spread over the tasks
    iterative: bool = True  # False: the seed improver does all the improving
    improver: str = "seed"  # generation 0
    model: ModelSettings = ModelSettings()
    round_budget: Budget  # the proposing improver's; evaluations: of the meta-utility
    test_budget: Budget  # each meta-utility test's; evaluations: of the task's utility
    seed: int = 0
    parallel: int = 2
    runs_dir: Path = Path("runs")
    sandbox: Sandbox = "jail"
    money: Money | None = None  # for the whole run, every round and test together


# --- improve runs -------------------------------------------------------------------


class ImproverOutcome(Shape):
    status: Literal["ok", "timeout", "crash", "syntax_error"]
    program: str | None = None
    error: str | None = None
    stderr: str = ""
    isolation: list[str] = []
    findings: list[str] = []  # what the sandbox's guard blocked or noticed


class CandidateRecord(Record):
    index: int
    origin: str  # "original" (the input re-scored), "model" (a reply scored by the improver)
    path: str | None  # the program file, relative to the run directory
    evaluation: Evaluation


class ImproverRecord(Record):
    """JSON an improver saved with the run through `utility.record(name, data)`, such as
    MAP-Elites's archive; stamped with the run it came from."""

    run_id: str
    name: str
    data: Any


class ImproveResult(Record):
    run_id: str
    run_dir: str
    target: str
    utility: str
    score_range: str
    # improver_failed: the original is kept, or the best candidate it had scored if better
    status: Literal["completed", "improver_failed"]
    improver: ImproverOutcome
    baseline_score: float
    best_score: float
    improved: bool
    speedup: float | None = None
    best_path: str
    diff: str
    candidates: list[CandidateRecord]
    usage: Usage
    # The money cap (--max-usd) ended the model's requests: no further one could fit.
    money_cap_reached: bool = False
    utility_uses: int
    rerank: RankStats = RankStats()
    seconds: float


# --- self-improve runs --------------------------------------------------------------


class TestResult(Shape):
    __test__ = False  # not a pytest class

    task: str
    index: int
    improver_status: str
    error: str | None = None
    val: float
    test: float
    findings: list[str] = []  # the guard's, the bait's, and reward-hacking signals


class MetaScore(Shape):
    val: float
    test: float
    spread: float  # standard deviation of the tests' validation scores
    per_task: dict[str, dict[str, float]]  # task -> {"val": mean, "test": mean}
    tests: list[TestResult]
    usage: Usage

    @property
    def findings(self) -> list[str]:
        """Every test's findings, each once, in order."""
        return list(dict.fromkeys(f for t in self.tests for f in t.findings))


class Proposal(Shape):
    """One improver a round's improver scored with the meta-utility on its way, kept in
    the record whether it won or not, so that a reverted round can say why."""

    origin: str
    sha256: str | None  # first 12 hex digits of the source
    status: Status
    val: float
    circumvented: bool  # it tried to switch the sandbox off
    audit: list[str]  # "kind: text (line n)"
    findings: list[str]
    test: float | None = None  # meta-utility on the test split; None: not scored
    error: str | None = None  # why it failed: the first failing meta-utility test's error
    path: str | None = None  # its source, relative to the run directory; None: no code


class GenerationRecord(Record):
    gen: int
    parent: int | None
    path: str  # the improver's source, relative to the run directory
    sha256: str
    meta_utility_val: float
    meta_utility_test: float
    meta: MetaScore
    kept: bool
    improver_status: str  # of the improver that proposed this generation
    improver_error: str | None = None
    # What the proposing improver's own run found: the guard's blocks, the bait, budgets
    # it asked past (a proposal scored past the round's budget is never evaluated).
    improver_findings: list[str] = []
    candidates: list[Proposal]  # the proposals it was chosen from, with their scores
    usage: Usage  # language model, proposing and scoring this generation
    seconds: float
    audit: list[Finding] = []  # what its source tries, read without running it
    findings: list[str] = []  # what it did at run time (the guard's), and gaming signals
    circumvented: bool = False  # it tried to switch the sandbox off
    # Why it was kept or reverted, one line ("every proposal failed: proposal 1 crashed:
    # ..."); None in records written before this was kept.
    reason: str | None = None


class SelfImproveResult(Record):
    run_id: str
    run_dir: str
    best_generation: int
    best_path: str
    circumvention_rate: float  # of proposed improvers, the fraction that tried
    generations: list[GenerationRecord]
    money_cap_reached: bool = False  # --max-usd ended the model's requests


# --- the language model's log (llm.jsonl) -------------------------------------------


class Exchange(Record):
    """One sample: what was asked, and the reply or the error."""

    time: float = Field(default_factory=time.time)
    gen: int | None = None  # self-improve: the generation this exchange helped make
    role: str | None = None  # self-improve: "improver" (proposing) or "meta-test"
    system: str
    user: str
    temperature: float
    sample: int
    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    finish_reason: str | None = None
    clipped_chars: int = 0
    error: str | None = None  # a failed sample: no text, no tokens


# --- the event log (events.jsonl), also what progress displays watch ----------------


class _Event(Shape):
    time: float = Field(default_factory=time.time)


class Process(Shape):
    """The process running a run, so that a reader can tell a running run from a killed
    one: its pid, its start time (clock ticks since boot: a pid is reused), its host."""

    pid: int
    start: int
    host: str


class Started(_Event):
    event: Literal["started"] = "started"
    kind: str  # improve, self-improve, exit
    process: Process | None = None  # None in runs made before it was recorded


class Resumed(_Event):
    event: Literal["resumed"] = "resumed"
    process: Process | None = None


class Calibrating(_Event):
    """A utility measures the original before the run (the speed utility times it)."""

    event: Literal["calibrating"] = "calibrating"
    utility: str


class Calibrated(_Event):
    event: Literal["calibrated"] = "calibrated"
    utility: str
    seconds: float


class Printed(_Event):
    """A line the user's own code (a utility file's build or scorer) printed in the host:
    kept in the run's log, so stdout stays the command's own."""

    event: Literal["printed"] = "printed"
    text: str


class ImproverStarted(_Event):
    event: Literal["improver_started"] = "improver_started"
    budget: int  # utility evaluations it may ask for


class ModelRequested(_Event):
    event: Literal["model_requested"] = "model_requested"
    n: int  # samples


class ScoreRequested(_Event):
    event: Literal["score_requested"] = "score_requested"


class CandidateSaved(_Event):
    event: Literal["candidate"] = "candidate"
    index: int
    status: Status
    score: float
    origin: str = "model"
    path: str | None = None


class RecordSaved(_Event):
    event: Literal["record"] = "record"
    name: str


class ImproverFinished(_Event):
    event: Literal["improver_finished"] = "improver_finished"
    status: str
    error: str | None = None


class Rescoring(_Event):
    event: Literal["rescoring"] = "rescoring"


class RoundStarted(_Event):
    event: Literal["round"] = "round"
    round: int
    rounds: int


class GenerationSaved(_Event):
    event: Literal["generation"] = "generation"
    gen: int
    val: float
    test: float
    kept: bool
    seconds: float = 0.0


class MetaTestStarted(_Event):
    """A meta-utility test begins: an improver runs on a task's seed solution."""

    event: Literal["meta_test_started"] = "meta_test_started"
    task: str
    index: int  # from 0, of `tests`
    tests: int
    improver: str | None = None  # `stop compare`, `transfer`: which one is tested


class MetaTestFinished(_Event):
    event: Literal["meta_test_finished"] = "meta_test_finished"
    task: str
    index: int
    tests: int
    improver: str | None = None
    status: str  # the improver's: ok, or how it failed (then val and test are 0)
    val: float
    test: float
    seconds: float


class IterationSaved(_Event):
    """Expert iteration: one iteration's checkpoint is written."""

    event: Literal["iteration"] = "iteration"
    iteration: int
    solve_rates: dict[str, float] = {}  # task -> fraction solved, greedy decoding


class Failed(_Event):
    event: Literal["failed"] = "failed"
    error: str


class Delivered(_Event):
    """An improver's wait was answered with `handle` (-1: with nothing, its timeout ran
    out): the order a resumed run is replayed in (stop/host/flight.py)."""

    event: Literal["delivered"] = "delivered"
    handle: int


class Finished(_Event):
    event: Literal["finished"] = "finished"
    improved: bool | None = None  # improve
    best_score: float | None = None  # improve
    generations: int | None = None  # self-improve


Event = Annotated[
    Started
    | Resumed
    | Calibrating
    | Calibrated
    | Printed
    | ImproverStarted
    | ModelRequested
    | ScoreRequested
    | CandidateSaved
    | RecordSaved
    | ImproverFinished
    | Rescoring
    | RoundStarted
    | GenerationSaved
    | MetaTestStarted
    | MetaTestFinished
    | Delivered
    | IterationSaved
    | Failed
    | Finished,
    Field(discriminator="event"),
]
