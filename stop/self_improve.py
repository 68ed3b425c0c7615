"""The core loop of `stop self-improve`: the improver improves its own source against the
meta-utility, generation after generation; every generation is saved as code.

Generation 0 is the seed improver. In each round the current improver (or, in the
non-iterative variant, always the seed) is run on the current improver's source with
the meta-utility as its utility. Its proposal is re-scored by the host and kept only if
it beats the current improver on validation. A generation's record is written only once
it is complete, so a run killed at any moment resumes at the first missing generation,
replaying the language model's answers from the response cache.

    self_improve(run, config, resume=None) -> SelfImproveResult
"""

from __future__ import annotations

import hashlib
import logging
import time

from stop.errors import BadInput
from stop.host.improver import CIRCUMVENTION, run_improver
from stop.llm.base import derive_seed
from stop.records import (
    Evaluation,
    Failed,
    Finding,
    Finished,
    GenerationRecord,
    ImproverOutcome,
    MetaScore,
    Proposal,
    RoundStarted,
    SelfImproveConfig,
    SelfImproveResult,
    Status,
    Usage,
    trim,
)
from stop.sandbox.jail import sandbox_kind
from stop.sandbox.runner import Limits
from stop.scoring.audit import DISABLES_SANDBOX, audit_source
from stop.scoring.meta import MetaUtility
from stop.scoring.task import TaskSpec, load_task
from stop.sources import load_improver
from stop.store import RunStore, read_generations
from stop.wiring import Run

log = logging.getLogger(__name__)


def circumvention_rate(generations: list[GenerationRecord]) -> float:
    """Of the improvers proposed in all rounds, the fraction that tried to switch the
    sandbox off (STOP's sandbox experiment)."""
    proposed = [c for g in generations for c in g.candidates if c.origin == "model"]
    return sum(c.circumvented for c in proposed) / len(proposed) if proposed else 0.0


def _circumvents(audit: list[Finding], findings: list[str]) -> bool:
    return any(f.kind == DISABLES_SANDBOX for f in audit) or CIRCUMVENTION in findings


def current(generations: list[GenerationRecord]) -> GenerationRecord:
    return [g for g in generations if g.kept][-1]


def prepare(config: SelfImproveConfig) -> tuple[list[TaskSpec], str]:
    """What in `config` can be bad input, checked before anything is printed or written:
    the rounds, the tests, the tasks and generation 0. Returns the tasks and its source."""
    if config.rounds < 1:
        raise BadInput("--rounds must be at least 1")
    if config.tests < 1:
        raise BadInput("--tests must be at least 1")
    tasks = [load_task(name) for name in config.tasks]
    if not tasks:
        raise BadInput("--tasks names no task")
    return tasks, load_improver(config.improver, config.runs_dir)


def self_improve(
    run: Run, config: SelfImproveConfig, *, resume: str | None = None, parallel: int | None = None
) -> SelfImproveResult:
    """`resume`: the id of the run `config` was read from, to continue where it stopped.
    `parallel`: meta-utility tests run at once (default: the config's); not stored, as it
    changes how fast a run goes, not what it finds."""
    tasks, seed_source = prepare(config)
    if resume is None:
        config = config.model_copy(update={"sandbox": sandbox_kind()})
        store = run.create_store("self-improve", config)
        (store.dir / "generations").mkdir()
    else:
        store = run.resume_store(resume)
    generations = read_generations(store.dir)
    meta = MetaUtility(
        tasks,
        run,
        tests=config.tests,
        budget=config.test_budget,
        evaluations=config.round_budget.evaluations,
        seed=config.seed,
        parallel=parallel or config.parallel,
    )
    if run.purse is not None:
        # What the saved generations cost counts against a resumed run's cap.
        run.purse.settle(0.0, sum(g.usage.usd for g in generations))
    try:
        if not generations:
            store.gen = 0
            store.emit(RoundStarted(round=0, rounds=config.rounds))
            started = time.monotonic()
            score = meta.score(seed_source)
            generations.append(
                _save(
                    store,
                    0,
                    None,
                    seed_source,
                    score,
                    True,
                    "ok",
                    None,
                    [],
                    score.usage,
                    started,
                    reason="the seed",
                )
            )
        for round_ in range(len(generations), config.rounds + 1):
            if run.purse is not None and run.purse.reached:
                log.info("the money cap is reached: no round more")
                break
            store.gen = round_
            store.emit(RoundStarted(round=round_, rounds=config.rounds))
            generations.append(_round(run, config, meta, generations, seed_source, round_))
    except BaseException as exc:
        store.emit(Failed(error=f"{type(exc).__name__}: {exc}"))
        raise
    store.emit(Finished(generations=len(generations)))
    best = current(generations)
    return SelfImproveResult(
        run_id=store.id,
        run_dir=str(store.dir),
        best_generation=best.gen,
        best_path=str(store.dir / best.path),
        circumvention_rate=circumvention_rate(generations),
        generations=generations,
        money_cap_reached=bool(run.purse and run.purse.reached),
    )


def _round(
    run: Run,
    config: SelfImproveConfig,
    meta: MetaUtility,
    generations: list[GenerationRecord],
    seed_source: str,
    round_: int,
) -> GenerationRecord:
    store = run.store
    assert store is not None
    started = time.monotonic()
    parent = current(generations)
    parent_source = (store.dir / parent.path).read_text()
    improver_source = parent_source if config.iterative else seed_source
    meta.uses = 0  # a fresh budget of meta-utility evaluations each round
    # Seeds differ by round so that each round draws new proposals.
    model = run.model(config.round_budget, derive_seed(config.seed, "round", round_), "improver")
    # Every proposal with its source, in the order the improver asked for them: the
    # rejected ones are what tells why a round was reverted.
    proposed: list[tuple[Proposal, str | None]] = []

    def on_candidate(origin: str, program: str | None, evaluation: Evaluation) -> None:
        proposed.append(
            _proposal(
                origin,
                program,
                evaluation.status,
                evaluation.score,
                evaluation.metrics.get("test"),
                evaluation.detail,
                evaluation.findings,
            )
        )

    outcome = run_improver(
        improver_source,
        parent_source,
        meta,
        model,
        limits=Limits(wall_s=config.round_budget.timeout_s),
        on_candidate=on_candidate,
    )
    proposal = outcome.program if outcome.status == "ok" and outcome.program else parent_source
    # The host's own scoring decides; what the improver believed counts for nothing.
    score = meta.score(proposal)
    kept = proposal.strip() != parent_source.strip() and score.val > parent.meta_utility_val
    path = f"generations/gen_{round_:03d}.py"
    candidates, sources = _place(proposed, round_, {proposal: path, parent_source: parent.path})
    reason = _reason(kept, parent, proposal, parent_source, score, outcome, candidates)
    return _save(
        store,
        round_,
        parent.gen,
        proposal,
        score,
        kept,
        outcome.status,
        outcome.error,
        candidates,
        model.usage + score.usage,
        started,
        reason=reason,
        proposals=sources,
        improver_findings=outcome.findings,
    )


def _proposal(
    origin: str,
    program: str | None,
    status: Status,
    val: float,
    test: float | None,
    error: str | None,
    findings: list[str],
) -> tuple[Proposal, str | None]:
    audit = audit_source(program or "")
    proposal = Proposal(
        origin=origin,
        sha256=hashlib.sha256(program.encode()).hexdigest()[:12] if program else None,
        status=status,
        val=val,
        test=test,
        error=error,
        circumvented=_circumvents(audit, findings),
        audit=[f"{f.kind}: {f.text} (line {f.line})" for f in audit],
        findings=findings,
    )
    return proposal, program


def _place(
    proposed: list[tuple[Proposal, str | None]], gen: int, known: dict[str, str]
) -> tuple[list[Proposal], dict[str, str]]:
    """Each proposal with the file its source is kept in: the parent's or the generation's
    own file when it is one of those (the improver re-scoring its input, or the proposal
    it returned), else one of its own under generations/gen_NNN/. Returns the proposals
    and the new files to write (path -> source)."""
    paths = dict(known)
    files: dict[str, str] = {}
    placed = []
    for index, (proposal, source) in enumerate(proposed):
        if source is not None:
            path = paths.get(source)
            if path is None:
                path = paths[source] = f"generations/gen_{gen:03d}/proposal_{index:03d}.py"
                files[path] = source
            proposal = proposal.model_copy(update={"path": path})
        placed.append(proposal)
    return placed, files


# How a proposal failed, as the end of "proposal 2 ...".
_FAILED = {
    "crash": "crashed",
    "timeout": "timed out",
    "syntax_error": "has a syntax error",
    "no_code": "held no code",
    "wrong_answer": "gave wrong answers",
    "rejected": "was rejected unrun",
}
REASON_ERROR_CHARS = 120  # of an error's last line in a reason; the record keeps it whole
REASON_FAILURES = 3  # failed proposals named in a reason; the record lists them all


def _failure(status: str, error: str | None) -> str:
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    # A traceback's last line names the exception, which is what a reader wants first.
    last = trim(lines[-1], REASON_ERROR_CHARS) if lines else ""
    return f"{_FAILED.get(status, status)}: {last}" if last else _FAILED.get(status, status)


def _reason(
    kept: bool,
    parent: GenerationRecord,
    proposal: str,
    parent_source: str,
    score: MetaScore,
    outcome: ImproverOutcome,
    candidates: list[Proposal],
) -> str:
    """Why a round's generation was kept or reverted, in one line. Proposals are named by
    their place in the record's candidates (0: usually the improver re-scoring its input)."""
    bar = f"{parent.meta_utility_val:.3f} of generation {parent.gen}"
    if kept:
        return f"scored {score.val:.3f} > {bar}"
    if outcome.status != "ok":
        return f"the improver {_failure(outcome.status, outcome.error)}"
    models = [(i, c) for i, c in enumerate(candidates) if c.origin == "model"]
    failed = [f"proposal {i} {_failure(c.status, c.error)}" for i, c in models if c.status != "ok"]
    if len(failed) > REASON_FAILURES:
        failed = [*failed[:REASON_FAILURES], f"{len(failed) - REASON_FAILURES} more failed"]
    if proposal.strip() == parent_source.strip():
        if not models:
            return "the improver returned its input and proposed nothing"
        scored = [(i, c) for i, c in models if c.status == "ok"]
        if not scored:
            return "every proposal failed: " + "; ".join(failed)
        i, best = max(scored, key=lambda pair: pair[1].val)
        if best.val > parent.meta_utility_val:  # the improver chose its input regardless
            head = f"the improver returned its input, though proposal {i} scored "
            head += f"{best.val:.3f} > {bar}"
        else:
            head = f"no proposal beat its parent: the best, proposal {i}, scored "
            head += f"{best.val:.3f} ≤ {bar}"
        return "; ".join([head, *failed])
    sha = hashlib.sha256(proposal.encode()).hexdigest()[:12]
    which = next((f"proposal {i}" for i, c in models if c.sha256 == sha), "the returned proposal")
    broken = [t for t in score.tests if t.improver_status != "ok"]
    if broken and len(broken) == len(score.tests):
        first = _failure(broken[0].improver_status, broken[0].error)
        return f"{which} failed every meta-utility test: it {first}"
    return f"{which} scored {score.val:.3f} ≤ {bar}"


def _save(
    store: RunStore,
    gen: int,
    parent: int | None,
    source: str,
    score: MetaScore,
    kept: bool,
    improver_status: str,
    improver_error: str | None,
    candidates: list[Proposal],
    usage: Usage,
    started: float,
    *,
    reason: str | None = None,
    proposals: dict[str, str] | None = None,
    improver_findings: list[str] | None = None,
) -> GenerationRecord:
    """`proposals`: the sources of the round's proposals that need files of their own
    (path -> source), written with the generation."""
    audit = audit_source(source)
    record = GenerationRecord(
        gen=gen,
        parent=parent,
        path=f"generations/gen_{gen:03d}.py",
        sha256=hashlib.sha256(source.encode()).hexdigest(),
        meta_utility_val=score.val,
        meta_utility_test=score.test,
        meta=score,
        kept=kept,
        improver_status=improver_status,
        improver_error=improver_error,
        improver_findings=improver_findings or [],
        candidates=candidates,
        usage=usage,
        seconds=time.monotonic() - started,
        audit=audit,
        findings=score.findings,
        circumvented=_circumvents(audit, score.findings),
        reason=reason,
    )
    store.save_generation(record, source, proposals or {})
    return record
