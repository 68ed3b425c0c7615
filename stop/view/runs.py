"""Read run directories back, finished or still running, as one shape for every view.

A self-improve run is a lineage of improver generations; an improve run is a flat one,
the original program and the candidates its improver proposed; an expert-iteration run
is a line of iterations, each a checkpoint of a model rather than a program. All become
a `RunView` with one `Node` per generation (or candidate, or iteration), so the table,
the tree, the source view, the terminal UI and the HTML export are written once.
"""

from __future__ import annotations

import ast
import difflib
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from stop.errors import BadInput
from stop.records import (
    CandidateRecord,
    Failed,
    Finished,
    ImproverRecord,
    IterationSaved,
    Proposal,
    Resumed,
    Started,
    TestResult,
)
from stop.store import read_events, read_generations, read_json, read_record

log = logging.getLogger(__name__)


class Node(BaseModel):
    """One generation of a self-improve run, one candidate of an improve run, or one
    iteration of an expert-iteration run."""

    model_config = ConfigDict(extra="forbid")

    gen: int
    parent: int | None
    path: str | None  # the program, relative to the run directory
    val: float | None  # validation score (an improve run's candidates have one score;
    # an expert-iteration run's iterations, the mean solve rate over the tasks)
    test: float | None = None
    kept: bool  # self-improve: became the current improver; improve: the run's choice
    status: str  # how the improver that produced it ended, or the candidate's evaluation
    error: str | None = None
    reason: str | None = None  # self-improve: why it was kept or reverted, one line
    tokens: int = 0
    calls: int = 0
    seconds: float = 0.0
    circumvented: bool = False
    audit: list[str] = []
    findings: list[str] = []
    improver_findings: list[str] = []  # self-improve: of the run of the improver proposing it
    candidates: list[Proposal] = []  # what it was chosen from, with scores
    tests: list[TestResult] = []  # meta-utility tests
    solve_rates: dict[str, float] = {}  # expert iteration: task -> fraction solved, greedy


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


class RunView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    dir: Path
    kind: str  # "self-improve", "improve" or "exit"
    started: datetime
    model: str
    rounds: int | None  # planned (self-improve: rounds; exit: iterations)
    status: str  # "running", "finished", "failed", "interrupted"
    error: str | None = None
    nodes: list[Node]
    in_progress: int | None = None  # the generation being made, when running
    target: str | None = None  # improve runs
    utility: str | None = None
    records: dict[str, Any] = {}  # what the improver saved (utility.record): name -> data
    warnings: list[str] = []  # what could not be shown, and why
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def best(self) -> Node | None:
        """The current improver (a generation is kept only if it beats its parent), or
        an improve run's choice."""
        kept = [n for n in self.nodes if n.kept]
        return kept[-1] if kept else None

    def node(self, gen: int) -> Node:
        for node in self.nodes:
            if node.gen == gen:
                return node
        have = f"{self.nodes[0].gen}..{self.nodes[-1].gen}" if self.nodes else "none yet"
        what = "iteration" if self.kind == "exit" else "generation"
        raise BadInput(f"run {self.id} has no {what} {gen} (it has {have})")

    def parent_of(self, node: Node) -> Node | None:
        return None if node.parent is None else self.node(node.parent)

    def source(self, node: Node) -> str:
        """A node's program; an iteration's solve rates, which is what it made."""
        if self.kind == "exit":
            return _solve_rates_text(node)
        return "" if node.path is None else self._read(node.path)

    def _read(self, path: str) -> str:
        if path not in self._sources:  # labels, diffs and summaries all read them
            try:
                self._sources[path] = (self.dir / path).read_text()
            except OSError as exc:
                raise BadInput(f"run {self.id}: cannot read {path}: {exc.strerror}") from exc
        return self._sources[path]

    def proposal(self, node: Node, index: int) -> Proposal:
        """Proposal `index` of the round that made a generation (its place in the record,
        as the reason and `stop show --proposal` number them)."""
        if not 0 <= index < len(node.candidates):
            have = f"0..{len(node.candidates) - 1}" if node.candidates else "none"
            raise BadInput(f"{self.noun} {node.gen} has no proposal {index} (it has {have})")
        return node.candidates[index]

    def proposal_source(self, proposal: Proposal) -> str | None:
        """A proposal's source; None when it had none (a reply with no code), or when it
        was recorded before proposals' sources were kept."""
        return None if proposal.path is None else self._read(proposal.path)

    def diff(self, node: Node) -> str:
        """Unified diff of a node's program against its parent's (empty for a root)."""
        parent = self.parent_of(node)
        if parent is None:
            return ""
        return "".join(
            difflib.unified_diff(
                self.source(parent).splitlines(keepends=True),
                self.source(node).splitlines(keepends=True),
                fromfile=f"{self.noun} {parent.gen}",
                tofile=f"{self.noun} {node.gen}",
            )
        )

    @property
    def noun(self) -> str:
        return {"self-improve": "generation", "exit": "iteration"}.get(self.kind, "candidate")

    def delta(self, node: Node) -> float | None:
        parent = self.parent_of(node)
        if parent is None or parent.val is None or node.val is None:
            return None
        return node.val - parent.val

    def exchanges(self, gen: int | None = None) -> list[dict[str, Any]]:
        """The language-model exchanges logged for the run, or for one generation (the
        round that produced it: its improver's own calls and the meta-utility's)."""
        path = self.dir / "llm.jsonl"
        if not path.is_file():
            return []
        found = []
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line being written right now
                if gen is None or entry.get("gen") == gen:
                    found.append(entry)
        return found

    def strategy(self, node: Node) -> str:
        if self.kind == "exit":
            return _progress(node, self.parent_of(node))
        if node.path is None:
            return "no program"
        parent = self.parent_of(node)
        if self.kind == "improve":  # candidates are target programs, not improvers
            return "the original" if parent is None else _line_changes(self, parent, node)
        return summarize(self.source(node), self.source(parent) if parent else None)


def _solve_rates_text(node: Node) -> str:
    """An iteration's greedy solve rates, a task a line (so that a diff is per task)."""
    solved = sum(rate == 1.0 for rate in node.solve_rates.values())
    head = (
        f"iteration {node.gen}: {solved} of {len(node.solve_rates)} tasks solved by greedy "
        f"decoding, mean solve rate {node.val or 0.0:.3f}"
    )
    width = max((len(name) for name in node.solve_rates), default=0)
    lines = [
        f"{name:<{width}}  {rate:.3f}{'  solved' if rate == 1.0 else ''}"
        for name, rate in node.solve_rates.items()
    ]
    return "\n".join([head, *lines]) + "\n"


def _progress(node: Node, parent: Node | None) -> str:
    """Tasks solved, and those solved for the first time since the previous iteration."""
    solved = [name for name, rate in node.solve_rates.items() if rate == 1.0]
    text = f"{len(solved)}/{len(node.solve_rates)} solved"
    before = set() if parent is None else {n for n, r in parent.solve_rates.items() if r == 1.0}
    new = [name for name in solved if name not in before]
    lost = sorted(before - set(solved))
    if new and parent is not None:
        text += f", new: {', '.join(new)}"
    if lost:
        text += f", lost: {', '.join(lost)}"
    return text


def _line_changes(view: RunView, parent: Node, node: Node) -> str:
    return f"{_changed(view.source(parent), view.source(node))} lines vs {view.noun} {parent.gen}"


def _changed(old: str, new: str) -> str:
    """Lines added and removed, as "+3/-1"."""
    changes = list(difflib.ndiff(old.splitlines(), new.splitlines()))
    added = sum(line.startswith("+ ") for line in changes)
    removed = sum(line.startswith("- ") for line in changes)
    return f"+{added}/-{removed}"


# Words that name a search strategy, as STOP's improvers named theirs.
_STRATEGIES = [
    ("beam", "beam search"),
    ("genetic", "genetic algorithm"),
    ("crossover", "genetic algorithm"),
    ("anneal", "simulated annealing"),
    ("bandit", "bandit"),
    ("ucb", "bandit"),
    ("tree", "tree search"),
    ("feedback", "feedback refinement"),
    ("elite", "MAP-Elites"),
    ("temperature", "varies temperature"),
    ("decompos", "decomposition"),
]


def summarize(source: str, parent: str | None) -> str:
    """One line on what an improver does: its own docstring's first line if it has one,
    else the strategies its code names, else how it differs from its parent."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return "does not parse"
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.name == "improve_algorithm":
            doc = ast.get_docstring(fn)
            if doc and doc.strip():
                return doc.strip().splitlines()[0][:80]
    lowered = source.lower()
    named = list(dict.fromkeys(label for word, label in _STRATEGIES if word in lowered))
    if parent is not None and source.strip() == parent.strip():
        return "same as its parent"
    if named:
        return ", ".join(named)
    if parent is None:
        return "seed"
    return f"{_changed(parent, source)} lines vs parent"


def list_runs(runs_dir: Path) -> list[RunView]:
    """Every run in runs_dir, oldest first; a directory that is not a readable run is
    skipped with a warning rather than hiding the others."""
    views: list[RunView] = []
    if not runs_dir.is_dir():
        return views
    for path in sorted(runs_dir.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        try:
            views.append(read_run(path))
        except BadInput as exc:
            log.warning("skipping %s: %s", path.name, exc)
    return views


def open_run(runs_dir: Path, run_id: str) -> RunView:
    """The run with this id; an unknown id is bad input, with the closest ids named."""
    path = runs_dir / run_id
    if "/" in run_id or run_id.startswith(".") or not path.is_dir():
        known = [p.name for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.is_dir() else []
        close = difflib.get_close_matches(run_id, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        if not known:
            hint = f"; {runs_dir} holds no runs"
        raise BadInput(f"no run {run_id!r} in {runs_dir}{hint}")
    return read_run(path)


def read_run(run_dir: Path) -> RunView:
    run_id = run_dir.name
    if not (run_dir / "config.json").is_file():
        raise BadInput(f"{run_dir} is not a stop run (it has no config.json)")
    config = read_json(run_dir / "config.json", run_id)
    events = read_events(run_dir)
    started = next((e for e in events if isinstance(e, Started)), None)
    kind = started.kind if started else ("self-improve" if "rounds" in config else "improve")
    status, error = "running", None
    for event in events:
        if isinstance(event, Finished):
            status, error = "finished", None
        elif isinstance(event, Failed):
            error = event.error
            status = "interrupted" if error.startswith("KeyboardInterrupt") else "failed"
        elif isinstance(event, Resumed):
            status, error = "running", None
    started_at = datetime.fromtimestamp(
        started.time if started else (run_dir / "config.json").stat().st_mtime
    )
    model = _model_name(kind, config)
    records, warnings = _records(run_dir, run_id)
    common: _Common = {
        "id": run_id,
        "dir": run_dir,
        "kind": kind,
        "started": started_at,
        "model": model,
        "status": status,
        "error": error,
        "records": records,
        "warnings": warnings,
    }
    try:
        if kind == "self-improve":
            nodes = _generations(run_dir)
            in_progress = len(nodes) if status == "running" else None
            return RunView(
                **common, rounds=config.get("rounds"), nodes=nodes, in_progress=in_progress
            )
        if kind == "exit":
            return _exit_run(events, config, common)
        return _improve_run(run_dir, run_id, config, common)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadInput(
            f"run {run_id} has a record this stop cannot read: {where}: {first['msg']}"
        ) from exc


def _model_name(kind: str, config: dict[str, Any]) -> str:
    if kind == "exit":  # a decoder trained from scratch: its size preset names it
        return f"decoder ({config.get('preset', '?')})"
    model = config.get("model") or {}
    options = model.get("options") or {}
    return model.get("model") or options.get("model") or model.get("backend") or "?"


def _records(run_dir: Path, run_id: str) -> tuple[dict[str, Any], list[str]]:
    """Records an improver saved with the run. One that is unreadable or belongs to
    another run (a copied file) is reported and left out, never fatal."""
    records, warnings = {}, []
    for path in sorted((run_dir / "records").glob("*.json")):
        try:
            record = ImproverRecord.model_validate_json(path.read_text())
        except (OSError, ValidationError) as exc:
            warnings.append(f"records/{path.name} is unreadable: {str(exc).splitlines()[0]}")
            continue
        if record.run_id != run_id:
            warnings.append(f"records/{path.name} belongs to run {record.run_id}: not shown")
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


def _exit_run(events: list[Any], config: dict[str, Any], common: _Common) -> RunView:
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
    planned = config.get("iterations")
    done = nodes[-1].gen if nodes else 0
    running = common["status"] == "running" and (planned is None or done < planned)
    return RunView(**common, rounds=planned, nodes=nodes, in_progress=done + 1 if running else None)


def _improve_run(run_dir: Path, run_id: str, config: dict[str, Any], common: _Common) -> RunView:
    records = [
        read_record(path, CandidateRecord, run_id, "candidate record")
        for path in sorted((run_dir / "candidates").glob("*.json"))
    ]
    result_path = run_dir / "result.json"
    result = read_json(result_path, run_id) if result_path.is_file() else None
    original = next((r.index for r in records if r.origin == "original"), None)
    chosen = None
    if result is not None and result.get("improved"):
        best = (run_dir / Path(result["best_path"]).name).read_text()
        chosen = next(
            (r.index for r in records if r.path and (run_dir / r.path).read_text() == best), None
        )
    nodes = [
        Node(
            gen=r.index,
            parent=None if r.origin == "original" else original,
            path=r.path,
            val=r.evaluation.score if r.path else None,
            kept=r.index == chosen or (chosen is None and r.index == original),
            status=r.evaluation.status,
            error=r.evaluation.detail,
            seconds=r.evaluation.seconds,
            findings=r.evaluation.findings,
        )
        for r in records
    ]
    usage = (result or {}).get("usage", {})
    root = next((n for n in nodes if n.gen == original), None)
    if root is not None and usage:  # the run's model usage, shown once, on the original
        root.tokens = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        root.calls = usage.get("calls", 0)
    return RunView(
        **common,
        rounds=None,
        nodes=nodes,
        target=str(config.get("target")),
        utility=config.get("utility"),
    )
