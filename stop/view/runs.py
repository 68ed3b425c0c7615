"""Read run folders back, finished or still running, as the one shape every view reads
(stop/view/runview.py).

A self-improve run is a lineage of improver generations; an improve run is a flat one,
the original program and the candidates its improver proposed; an expert-iteration run
is a line of iterations, each a checkpoint of a model rather than a program.

A run folder that cannot be read back (a file missing, unreadable, truncated, of another
run format) is a DamagedRun naming the file and what is wrong: bad input for a command
that reads that run, one line of a listing's `Listing.skipped` for `stop runs`.
"""

from __future__ import annotations

import difflib
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

from stop.errors import BadInput
from stop.records import (
    CandidateRecord,
    ImproveResult,
    ImproverRecord,
    IterationSaved,
    Started,
)
from stop.store import (
    DamagedRun,
    is_dir,
    list_folder,
    read_generations,
    read_json,
    read_record,
    read_text,
    run_state,
    scan_events,
    shown_name,
)
from stop.view.runview import Node, RunView, summarize

__all__ = ["Listing", "Node", "RunView", "list_runs", "open_run", "read_run", "summarize"]


class _Common(TypedDict):
    """The RunView fields every kind of run has, read before the kind-specific ones."""

    id: str
    dir: Path
    kind: str
    started: datetime
    model: str
    status: str
    error: str | None
    records: dict[str, Any]
    warnings: list[str]


class _ModelFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    backend: str | None = None
    model: str | None = None
    options: dict[str, Any] = {}


class _ConfigFields(BaseModel):
    """What a view reads of a config.json, whichever kind of run wrote it (each kind's
    own config record has more, and checks it when the run is resumed)."""

    model_config = ConfigDict(extra="ignore")

    rounds: int | None = None  # self-improve
    iterations: int | None = None  # exit
    preset: str | None = None  # exit: the decoder's size
    target: str | None = None  # improve
    utility: str | None = None
    model: _ModelFields | None = None


class Listing(NamedTuple):
    views: list[RunView]  # oldest first
    skipped: list[DamagedRun]  # folders that are not readable runs, each saying why


def list_runs(runs_dir: Path) -> Listing:
    """Every run in runs_dir; a folder that is not a readable run is skipped, and said
    why, rather than hiding the others."""
    views: list[RunView] = []
    skipped: list[DamagedRun] = []
    try:
        entries = sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []
    except OSError as exc:
        raise BadInput(f"cannot read {runs_dir} ({exc.strerror or exc})") from exc
    for path in entries:
        try:
            if not path.is_dir() or path.name.startswith("."):
                continue
            views.append(read_run(path))
        except DamagedRun as exc:
            skipped.append(exc)
        except (BadInput, OSError) as exc:  # what the readers do not name: still one line
            skipped.append(DamagedRun(path.name, _why(exc)))
    return Listing(views, skipped)


def _why(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


def open_run(runs_dir: Path, run_id: str) -> RunView:
    """The run with this id; an unknown id is bad input, with the closest ids named."""
    path = runs_dir / run_id
    if "/" in run_id or run_id.startswith(".") or not is_dir(path):
        try:
            known = [p.name for p in runs_dir.iterdir() if p.is_dir()] if is_dir(runs_dir) else []
        except OSError:
            known = []  # the hint is a courtesy: the error is the unknown id
        close = difflib.get_close_matches(run_id, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        if not known:
            hint = f"; {runs_dir} holds no runs"
        raise BadInput(f"no run {run_id!r} in {runs_dir}{hint}")
    return read_run(path)


def read_run(run_dir: Path) -> RunView:
    """A run folder as a RunView; a DamagedRun where it cannot be read back."""
    run_id = run_dir.name
    config_path = run_dir / "config.json"
    try:
        configured = config_path.stat().st_mtime
    except FileNotFoundError as exc:
        raise DamagedRun(run_id, "not a stop run (it has no config.json)") from exc
    except OSError as exc:
        raise DamagedRun(run_id, f"cannot read config.json ({exc.strerror or exc})") from exc
    raw = read_json(config_path, run_id)
    try:
        config = _ConfigFields.model_validate(raw)
    except ValidationError as exc:
        raise DamagedRun(run_id, f"corrupt config.json: {_first(exc)}") from exc
    events, bad_lines = scan_events(run_dir)
    started = next((e for e in events if isinstance(e, Started)), None)
    kind = started.kind if started else ("self-improve" if "rounds" in raw else "improve")
    status, error, _ = run_state(events)
    records, warnings = _records(run_dir, run_id)
    if bad_lines:
        # The rest of the log still says how the run went; the status may be stale.
        shown = ", ".join(map(str, bad_lines[:5])) + (", …" if len(bad_lines) > 5 else "")
        what = (
            f"line {shown} is not an event"
            if len(bad_lines) == 1
            else f"lines {shown} are not events"
        )
        warnings.insert(0, f"events.jsonl: {what} (skipped)")
    common: _Common = {
        "id": run_id,
        "dir": run_dir,
        "kind": kind,
        "started": datetime.fromtimestamp(started.time if started else configured),
        "model": _model_name(kind, config),
        "status": status,
        "error": error,
        "records": records,
        "warnings": warnings,
    }
    try:
        if kind == "self-improve":
            nodes = _generations(run_dir)
            in_progress = len(nodes) if status == "running" else None
            view = RunView(**common, rounds=config.rounds, nodes=nodes, in_progress=in_progress)
        elif kind == "exit":
            view = _exit_run(events, config, common)
        else:
            view = _improve_run(run_dir, run_id, config, common)
    except ValidationError as exc:
        raise DamagedRun(run_id, f"has a record this stop cannot read: {_first(exc)}") from exc
    _check_files(view)
    return view


def _first(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"


def _check_files(view: RunView) -> None:
    """Every program the run's records name is a file there. Reading them all would
    cost `stop runs` the whole run; a stat each is cheap, and finds a folder that lost
    one (a reader of a damaged one still says so, when it reads it)."""
    paths = [n.path for n in view.nodes] + [c.path for n in view.nodes for c in n.candidates]
    for path in dict.fromkeys(p for p in paths if p is not None):
        name = shown_name(view.dir / path, view.id)
        try:
            regular = stat.S_ISREG(os.stat(view.dir / path).st_mode)
        except FileNotFoundError:
            raise DamagedRun(view.id, f"{name} is missing") from None
        except OSError as exc:
            raise DamagedRun(view.id, f"cannot read {name} ({exc.strerror or exc})") from exc
        if not regular:
            raise DamagedRun(view.id, f"cannot read {name} (not a file)")


def _model_name(kind: str, config: _ConfigFields) -> str:
    if kind == "exit":  # a decoder trained from scratch: its size preset names it
        return f"decoder ({config.preset or '?'})"
    model = config.model or _ModelFields()
    option = model.options.get("model")
    return model.model or (option if isinstance(option, str) else None) or model.backend or "?"


def _records(run_dir: Path, run_id: str) -> tuple[dict[str, Any], list[str]]:
    """Records an improver saved with the run. One that is unreadable or belongs to
    another run (a copied file) is reported and left out, never fatal."""
    records, warnings = {}, []
    try:
        names = list_folder(run_dir / "records", run_id)
    except DamagedRun as exc:
        return {}, [exc.problem]
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            record = ImproverRecord.model_validate_json((run_dir / "records" / name).read_bytes())
        except (OSError, ValidationError) as exc:
            warnings.append(f"records/{name} is unreadable: {str(exc).splitlines()[0]}")
            continue
        if record.run_id != run_id:
            warnings.append(f"records/{name} belongs to run {record.run_id}: not shown")
            continue
        records[record.name] = record.data
    return records, warnings


def _generations(run_dir: Path) -> list[Node]:
    return [
        Node(
            gen=g.gen,
            parent=g.parent,
            path=g.path,
            val=g.meta_utility_val,
            test=g.meta_utility_test,
            kept=g.kept,
            status=g.improver_status,
            error=g.improver_error,
            reason=g.reason,
            tokens=g.usage.tokens,
            calls=g.usage.calls,
            usd=g.usage.usd,
            usd_cached=g.usage.usd_cached,
            seconds=g.seconds,
            circumvented=g.circumvented,
            audit=[f"{f.kind}: {f.text} (line {f.line})" for f in g.audit],
            findings=g.findings,
            improver_findings=g.improver_findings,
            candidates=g.candidates,
            tests=g.meta.tests,
        )
        for g in read_generations(run_dir)
    ]


def _exit_run(events: list[Any], config: _ConfigFields, common: _Common) -> RunView:
    """One node per iteration logged (each one a checkpoint), in a line: each iteration
    trains on from the one before, and none is ever reverted."""
    # By number, the last event of a number winning. A crash between an iteration's
    # checkpoint and its event leaves a gap: the next iteration hangs under the one before.
    iterations = {e.iteration: e for e in events if isinstance(e, IterationSaved)}
    nodes: list[Node] = []
    for number in sorted(iterations):
        rates = iterations[number].solve_rates
        nodes.append(
            Node(
                gen=number,
                parent=nodes[-1].gen if nodes else None,
                path=None,
                val=sum(rates.values()) / len(rates) if rates else None,
                kept=True,
                status="ok",
                solve_rates=rates,
            )
        )
    planned = config.iterations
    done = nodes[-1].gen if nodes else 0
    running = common["status"] == "running" and (planned is None or done < planned)
    return RunView(**common, rounds=planned, nodes=nodes, in_progress=done + 1 if running else None)


def _improve_run(run_dir: Path, run_id: str, config: _ConfigFields, common: _Common) -> RunView:
    folder = run_dir / "candidates"
    records = [
        read_record(folder / name, CandidateRecord, run_id, "candidate record")
        for name in list_folder(folder, run_id)
        if name.endswith(".json")
    ]
    result_path = run_dir / "result.json"
    # None while the run goes on: the result is written last.
    result = (
        read_record(result_path, ImproveResult, run_id, "result") if _exists(result_path) else None
    )
    original = next((r.index for r in records if r.origin == "original"), None)
    chosen = None
    if result is not None and result.improved:
        best = read_text(run_dir / Path(result.best_path).name, run_id)
        chosen = next(
            (r.index for r in records if r.path and read_text(run_dir / r.path, run_id) == best),
            None,
        )
    nodes = [
        Node(
            gen=r.index,
            parent=None if r.origin == "original" else original,
            path=r.path,
            # A provisional timing is no score (the improver ranked by it, nothing shows it).
            val=r.evaluation.score if r.path and not r.evaluation.provisional else None,
            kept=r.index == chosen or (chosen is None and r.index == original),
            status=r.evaluation.status,
            error=r.evaluation.detail,
            seconds=r.evaluation.seconds,
            findings=r.evaluation.findings,
        )
        for r in records
    ]
    if result is not None:
        # The run's best score is the final re-scoring's, as `stop improve` reported it,
        # not the chosen candidate's score during the run: one number everywhere.
        for node in nodes:
            if node.kept:
                node.val = result.best_score
    root = next((n for n in nodes if n.gen == original), None)
    if root is not None and result is not None:  # the run's model usage, shown once
        root.tokens = result.usage.prompt_tokens + result.usage.completion_tokens
        root.calls = result.usage.calls
        root.usd, root.usd_cached = result.usage.usd, result.usage.usd_cached
    return RunView(**common, rounds=None, nodes=nodes, target=config.target, utility=config.utility)


def _exists(path: Path) -> bool:
    """Whether `path` is there at all (a reader says what else is wrong with it)."""
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True
