"""The core loop of `stop improve`: one improver, one target, one utility, one run record.

    improve(run, config) -> ImproveResult

`run` (stop/wiring.py) holds the built parts; this module validates the input, runs the
improver once through the host (stop/host/improver.py) and re-scores its choice.
"""

from __future__ import annotations

import difflib
import logging
import time
from pathlib import Path

from stop.errors import BadInput
from stop.host.improver import run_improver
from stop.host.ranking import CandidateRanker
from stop.llm.model import LanguageModel
from stop.records import (
    CandidateRecord,
    Delivered,
    Evaluation,
    Failed,
    Finished,
    ImproveConfig,
    ImproveResult,
    ImproverFinished,
    ImproverStarted,
    ModelRequested,
    Rescoring,
    ScoreRequested,
)
from stop.sandbox.jail import sandbox_kind
from stop.sandbox.runner import Limits
from stop.scoring import sameness
from stop.scoring.utility import Target, Utility
from stop.sources import load_improver, read_source
from stop.store import RunStore
from stop.wiring import Run

log = logging.getLogger(__name__)

# A noisy utility's win by less than this factor is timed in CONFIRM_ROUNDS more rounds,
# and the medians of all of them decide.
CONFIRM_BELOW = 1.25
CONFIRM_ROUNDS = 4


def _read_target(path: Path) -> Target:
    source = read_source(path, "target")
    if not source.strip():
        raise BadInput(f"target {path} is empty")
    return Target(path=path, source=source)


def _check_python(target: Target) -> None:
    try:
        compile(target.source, str(target.path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BadInput(f"{target.path} has a syntax error at line {exc.lineno}: {exc.msg}") from exc


def rescore(
    utility: Utility, original: str, chosen: str | None
) -> tuple[Evaluation, Evaluation | None]:
    """Score the original and the choice side by side with the hidden scorer.

    A noisy utility (timing) is measured in interleaved rounds and the median kept, so
    that a load spike during one measurement cannot crown a no-op rewrite.
    """
    pairs = _rounds(utility, original, chosen, 3 if utility.noisy else 1)
    baseline, decided = _decided(pairs)
    if utility.noisy and decided is not None and _narrow(utility, baseline, decided):
        # A narrow win is timed again before it counts: noise alone crowned programs
        # that do the original's work at 1.10-1.14x on the medians of three rounds.
        pairs += _rounds(utility, original, chosen, CONFIRM_ROUNDS)
        baseline, decided = _decided(pairs)
    return baseline, decided


def _rounds(
    utility: Utility, original: str, chosen: str | None, rounds: int
) -> list[tuple[Evaluation, Evaluation | None]]:
    pairs = []
    for _ in range(rounds):
        first = utility.judge(original)
        second = utility.judge(chosen) if chosen is not None else None
        pairs.append((first, second))
        if second is not None and second.status != "ok":
            break  # a failure is not noise
    return pairs


def _decided(
    pairs: list[tuple[Evaluation, Evaluation | None]],
) -> tuple[Evaluation, Evaluation | None]:
    """The original's median and the choice's: its first failure, else its median."""
    baseline = _median([p[0] for p in pairs])
    evaluations = [p[1] for p in pairs if p[1] is not None]
    if not evaluations:
        return baseline, None
    failed = [e for e in evaluations if e.status != "ok"]
    return baseline, failed[0] if failed else _median(evaluations)


def _narrow(utility: Utility, baseline: Evaluation, chosen: Evaluation) -> bool:
    """Whether the choice wins, by less than CONFIRM_BELOW."""
    b, c = baseline.score, chosen.score
    return chosen.status == "ok" and utility.improves(c, b) and c < b * CONFIRM_BELOW


def _rival(program: str, original: str, utility: Utility) -> bool:
    """Whether `program` may be crowned over the original. Under a noisy utility (a
    timing) a copy that differs only in comments, layout or docstrings may not: whatever
    it measured faster was noise (the embedded model's rewrites are mostly such copies)."""
    if program.strip() == original.strip():
        return False
    return not (utility.noisy and sameness.same_code(program, original, utility.language))


def _best_scored(
    scored: list[tuple[str, Evaluation]], original: str, utility: Utility
) -> str | None:
    """The best program the improver had scored, other than the original; the first of
    equals."""
    rivals = [(p, e) for p, e in scored if e.status == "ok" and _rival(p, original, utility)]
    return max(rivals, key=lambda pe: pe[1].score)[0] if rivals else None


def _median(evaluations: list[Evaluation]) -> Evaluation:
    ranked = sorted(evaluations, key=lambda e: e.score)
    return ranked[len(ranked) // 2]


def improve(run: Run, config: ImproveConfig, resume: str | None = None) -> ImproveResult:
    """Validate everything, then run the improver once and record the run.

    `resume`: the id of the run `config` was read from, killed or interrupted before it
    finished. The improver runs again from the start in the same folder, its model
    replies replayed from the response cache and its waits answered in the recorded
    order, so it asks for the same requests, pays for none twice and, with a
    deterministic utility, ends where the uninterrupted run would have."""
    started = time.monotonic()
    # Everything that can be wrong with the input is found before the run directory exists.
    target = _read_target(config.target)
    improver_source = load_improver(config.improver, config.runs_dir)
    utility = run.utility(config.utility, target, config.utility_options, config.budget.evaluations)
    if utility.language == "python":
        _check_python(target)
    schedule = None
    if resume is None:
        config = config.model_copy(update={"sandbox": sandbox_kind()})
        store = run.create_store("improve", config)
    else:
        store = run.resume_store(resume)
        schedule = store.restart_improve()
    store.suffix = target.path.suffix or ".py"
    store.write_text(f"original{store.suffix}", target.source)
    model = run.model(config.budget, config.seed)
    store.emit(ImproverStarted(budget=utility.budget))
    try:
        return _run(config, target, improver_source, utility, model, store, started, schedule)
    except BaseException as exc:
        # Ctrl-C or a failure of stop itself: say so in the log, which a viewer reads.
        store.emit(Failed(error=f"{type(exc).__name__}: {exc}"))
        raise


def _run(
    config: ImproveConfig,
    target: Target,
    improver_source: str,
    utility: Utility,
    model: LanguageModel,
    store: RunStore,
    started: float,
    schedule: list[int] | None,
) -> ImproveResult:
    candidates: list[CandidateRecord] = []
    scored: list[tuple[str, Evaluation]] = []  # what the improver had scored, in order

    def on_candidate(origin: str, program: str | None, evaluation: Evaluation) -> None:
        candidates.append(store.save_candidate(origin, program, evaluation))
        if program is not None:
            scored.append((program, evaluation))

    def on_request(kind: str, n: int) -> None:
        store.emit(ModelRequested(n=n) if kind == "generate" else ScoreRequested())

    ranker = CandidateRanker(seed=config.seed)
    outcome = run_improver(
        improver_source,
        target.source,
        utility,
        model,
        limits=Limits(wall_s=config.budget.timeout_s),
        on_candidate=on_candidate,
        on_request=on_request,
        ranker=ranker,
        on_record=store.save_improver_record,
        schedule=schedule,
        on_delivered=lambda handle: store.emit(Delivered(handle=handle)),
    )
    store.emit(ImproverFinished(status=outcome.status, error=outcome.error))

    # The host re-scores the original and the improver's choice with the hidden scorer:
    # what the improver claims about its choice counts for nothing.
    store.emit(Rescoring())
    changed = bool(
        outcome.status == "ok"
        and outcome.program
        and _rival(outcome.program, target.source, utility)
    )
    candidate = outcome.program if changed else None
    if outcome.status != "ok":
        # An improver that fails after scoring candidates (a STOP improver raises once the
        # model's budget is spent) still leaves them: its best one is re-scored like a choice.
        candidate = _best_scored(scored, target.source, utility)
    baseline, chosen = rescore(utility, target.source, candidate)
    best_program, best = target.source, baseline
    if (
        candidate is not None
        and chosen is not None
        and chosen.status == "ok"
        and utility.improves(chosen.score, baseline.score)
    ):
        best_program, best = candidate, chosen
    improved = best_program is not target.source
    best_path = store.write_text(f"best{store.suffix}", best_program)
    diff = "".join(
        difflib.unified_diff(
            target.source.splitlines(keepends=True),
            best_program.splitlines(keepends=True),
            fromfile=f"{target.path.name} (original)",
            tofile=f"{target.path.name} (best)",
        )
    )
    speedup = None
    if utility.name == "speed":
        # Both measured now, side by side: original time / best time.
        speedup = best.score / baseline.score if improved and baseline.score > 0 else 1.0
    result = ImproveResult(
        run_id=store.id,
        run_dir=str(store.dir),
        target=str(target.path),
        utility=utility.name,
        score_range=utility.score_range,
        status="completed" if outcome.status == "ok" else "improver_failed",
        improver=outcome,
        baseline_score=baseline.score,
        best_score=best.score,
        improved=improved,
        speedup=speedup,
        best_path=str(best_path),
        diff=diff,
        candidates=candidates,
        usage=model.usage,
        money_cap_reached=bool(model.purse and model.purse.reached),
        utility_uses=utility.uses,
        rerank=ranker.stats,
        seconds=time.monotonic() - started,
    )
    store.write_record("result.json", result)
    store.emit(Finished(improved=improved, best_score=best.score))
    return result
