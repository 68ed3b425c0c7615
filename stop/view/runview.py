"""The one shape every view of a run reads: a `RunView` with one `Node` per generation
(a self-improve run), candidate (an improve run) or iteration (an expert-iteration run),
and what is said about a node (its source, diff, strategy). stop/view/runs.py makes them
from run folders; the table, the tree, the source view, the terminal UI and the HTML
export are written once, over this.
"""

from __future__ import annotations

import ast
import difflib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from stop.errors import BadInput
from stop.records import Proposal, TestResult
from stop.store import DamagedRun, read_text


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
    # USD of its model calls at the run's prices (an improve run: the whole run's, on the
    # original), and the part of it replayed from the response cache; 0 without prices.
    usd: float = 0.0
    usd_cached: float = 0.0
    seconds: float = 0.0
    circumvented: bool = False
    audit: list[str] = []
    findings: list[str] = []
    improver_findings: list[str] = []  # self-improve: of the run of the improver proposing it
    candidates: list[Proposal] = []  # what it was chosen from, with scores
    tests: list[TestResult] = []  # meta-utility tests
    solve_rates: dict[str, float] = {}  # expert iteration: task -> fraction solved, greedy


class RunView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    dir: Path
    kind: str  # "self-improve", "improve" or "exit"
    started: datetime
    model: str
    rounds: int | None  # planned (self-improve: rounds; exit: iterations)
    status: str  # "running", "finished", "failed", "interrupted", "killed"
    error: str | None = None
    nodes: list[Node]
    in_progress: int | None = None  # the generation being made, when running
    target: str | None = None  # improve runs
    utility: str | None = None
    records: dict[str, Any] = {}  # what the improver saved (utility.record): name -> data
    warnings: list[str] = []  # what could not be shown, and why
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def usd(self) -> float:
        """What the run's model calls cost at its prices, so far (0 without prices)."""
        return sum(n.usd for n in self.nodes)

    @property
    def usd_cached(self) -> float:
        """The part of `usd` replayed from the response cache, not paid again."""
        return sum(n.usd_cached for n in self.nodes)

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
            self._sources[path] = read_text(self.dir / path, self.id)
        return self._sources[path]

    def read_sources(self) -> None:
        """Read every program the run names now, so that a damaged one is a DamagedRun
        before a screen is drawn rather than an error in the middle of it."""
        for node in self.nodes:
            self.source(node)
            for proposal in node.candidates:
                self.proposal_source(proposal)

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
        round that produced it: its improver's own calls and the meta-utility's). A line
        that is not one (being written right now, or damaged) is left out."""
        try:
            data = (self.dir / "llm.jsonl").read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            why = exc.strerror or exc
            raise DamagedRun(self.id, f"cannot read llm.jsonl ({why})") from exc
        found = []
        for line in data.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # not JSON, or not UTF-8
                continue
            if isinstance(entry, dict) and (gen is None or entry.get("gen") == gen):
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
