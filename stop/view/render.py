"""Rich renderings of saved runs: the lineage tree with its chart, a generation's
source or diff (the tables: stop/view/tables.py). The terminal UI and `stop lineage`
share these."""

from __future__ import annotations

import difflib
from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from stop.llm.prices import spending, usd
from stop.view.inert import inert
from stop.view.runview import Node, RunView
from stop.view.tables import fmt, proposals_table

_BARS = "▁▂▃▄▅▆▇█"
_SHORT = {"self-improve": "gen", "exit": "iter"}  # a node's name in labels; else "cand"
# What a node's value is, per kind of run (an improve run's candidates: their score).
_VALUE = {"self-improve": "meta-utility (val)", "exit": "mean solve rate"}


def sparkline(values: list[float | None]) -> str:
    """One character per value, scaled between the smallest and the largest."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    return "".join(
        " " if v is None else _BARS[round((v - low) / span * (len(_BARS) - 1))] for v in values
    )


def node_label(view: RunView, node: Node) -> Text:
    """gen, scores, change against the parent, kept or reverted, tokens, USD, strategy."""
    label = Text()
    label.append(f"{short(view)} {node.gen}", style="bold")
    if view.kind == "self-improve":
        label.append(f"  val {fmt(node.val)}  test {fmt(node.test)}")
    elif view.kind == "exit":
        label.append(f"  solve rate {fmt(node.val)}")
    else:
        label.append(f"  score {fmt(node.val)}  {node.status}")
    delta = view.delta(node)
    if delta is not None:
        label.append(f"  Δ {delta:+.3f}", style="green" if delta > 0 else "red" if delta else "")
    # Every iteration of an expert-iteration run is kept: saying so would say nothing.
    if view.kind == "self-improve" and node.parent is not None:
        label.append("  kept" if node.kept else "  reverted", "green" if node.kept else "dim")
    elif view.kind == "improve" and node.kept:
        label.append("  chosen", "green")
    # Before the long parts, so that a narrow pane still shows it.
    if node.circumvented:
        label.append("  ⚠ tried to switch the sandbox off", style="bold red")
    elif node.audit:
        kinds = sorted({a.split(":")[0] for a in node.audit})
        label.append(f"  audit: {', '.join(kinds)}", style="yellow")
    if node.tokens:
        label.append(f"  {node.tokens:,} tok", style="dim")
    if node.usd > 0:  # a run without prices (the local model's) shows no money
        label.append(f"  {usd(node.usd)}", style="dim")
    label.append(f"  {inert(view.strategy(node))}", style="italic")
    return label


def short(view: RunView) -> str:
    return _SHORT.get(view.kind, "cand")


def placement(view: RunView) -> list[tuple[Node, int | None]]:
    """Each node with the node it hangs under in the tree (None: the top), parents first.

    In a self-improve run the kept line (each kept generation's parent is the one kept
    before it) stays at the top level, so fifty generations do not indent fifty times,
    and a reverted proposal hangs under the generation it was proposed from. In an
    improve run every candidate hangs under the original. An expert-iteration run is one
    line of kept iterations.
    """
    flat = view.kind in ("self-improve", "exit")
    under = {n.gen: None if (flat and n.kept) else n.parent for n in view.nodes}
    children: dict[int | None, list[Node]] = {}
    for node in view.nodes:
        children.setdefault(under[node.gen], []).append(node)
    ordered: list[tuple[Node, int | None]] = []

    def visit(parent: int | None) -> None:
        for child in children.get(parent, []):
            ordered.append((child, parent))
            visit(child.gen)

    visit(None)
    placed = {node.gen for node, _ in ordered}  # a node whose parent is missing: at the top
    ordered += [(n, None) for n in view.nodes if n.gen not in placed]
    return ordered


def title(view: RunView) -> Text:
    """The run's id, kind, model and status, and what its model calls cost where they
    were priced."""
    text = Text.assemble((view.id, "bold"), f"  {view.kind}, {view.model}, {view.status}")
    spent = spending(view.usd, view.usd_cached)
    if spent is not None:
        text.append(f", spent {spent}")
    return text


def lineage_tree(view: RunView) -> Tree:
    tree = Tree(title(view))
    branches: dict[int | None, Tree] = {}
    for node, parent in placement(view):
        # One line a generation, its strategy (last) cut where the terminal ends, so a
        # long lineage reads down the screen; why one was reverted is a line of its own.
        text = node_label(view, node)
        text.no_wrap, text.overflow = True, "ellipsis"
        label: RenderableType = text
        if view.kind == "self-improve" and not node.kept and node.reason:
            label = Group(text, Text(f"↳ reverted: {inert(node.reason)}", style="red"))
        branches[node.gen] = branches.get(parent, tree).add(label)
    if view.in_progress is not None:
        tree.add(Text(f"{short(view)} {view.in_progress}  in progress", style="cyan"))
    return tree


def lineage(view: RunView) -> RenderableType:
    """The tree, then the utility per generation as a sparkline."""
    parts: list[RenderableType] = [lineage_tree(view)]
    vals = [n.val for n in view.nodes]
    if len([v for v in vals if v is not None]) > 1:
        known = [v for v in vals if v is not None]
        name = _VALUE.get(view.kind, "score")
        parts.append(
            Text.assemble(
                f"{name} per {view.noun if view.kind == 'exit' else 'generation'}  "
                f"{fmt(min(known))} ",
                (sparkline(vals), "cyan"),
                f" {fmt(max(known))}",
            )
        )
    if "archive" in view.records:
        parts.append(archive_table(view.records["archive"]))
    parts.extend(Text(inert(w), style="yellow") for w in view.warnings)
    if view.error:
        parts.append(Text(f"{view.status}: {inert(view.error)}", style="red"))
    return Group(*parts)


def archive_table(archive: Any) -> RenderableType:
    """MAP-Elites's archive as a grid: one cell per behaviour bin, holding its elite's
    score. The improver wrote it, so its shape is checked rather than trusted."""
    try:
        edges = [float(e) for e in archive["edges"]]
        cells = {tuple(int(i) for i in c["cell"]): float(c["score"]) for c in archive["cells"]}
        rows_name, cols_name = (str(d) for d in archive["descriptors"][:2])
    except (KeyError, TypeError, ValueError, IndexError):
        return Text("records/archive.json does not hold a MAP-Elites archive", style="yellow")
    pairs = zip(edges, edges[1:], strict=False)
    bounds = [f"<{edges[0]:g}", *(f"{a:g}-{b:g}" for a, b in pairs), f">{edges[-1]:g}"]
    filled = f"{len(cells)} cells filled, {archive.get('evaluations', '?')} evaluations"
    table = Table(title=f"MAP-Elites archive: {filled}", title_justify="left")
    table.add_column(f"{rows_name} \\ {cols_name}")
    for bound in bounds:
        table.add_column(bound, justify="right")
    for i, bound in enumerate(bounds):
        row = [fmt(cells[(i, j)]) if (i, j) in cells else "·" for j in range(len(bounds))]
        table.add_row(bound, *row)
    return table


def lexer(view: RunView, node: Node) -> str:
    """Pygments' name for the language of what `view.source(node)` returns."""
    return "python" if (node.path or "").endswith(".py") else "text"


def source(view: RunView, node: Node, diff: bool = False, plain: bool = False) -> Text:
    """A generation's program with line numbers, or its diff against its parent, as
    highlighted text: highlighted once, so a terminal UI that re-renders the pane on
    every resize does not lex the code again (a rich Syntax would)."""
    what = "iteration" if view.kind == "exit" else "generation"
    if diff:
        if node.parent is None:
            return Text(f"{what} {node.gen} has no parent: nothing to diff", style="dim")
        text = inert(view.diff(node))
        if not text:
            return Text(f"{what} {node.gen} is the same as its parent", style="dim")
        return Text(text) if plain else highlight(text, "diff")
    if node.path is None and view.kind != "exit":  # an iteration's source: its solve rates
        return Text(f"{what} {node.gen} has no program (the model gave no code)", style="dim")
    return numbered(view.source(node), lexer(view, node), plain)


def numbered(program: str, language: str, plain: bool = False) -> Text:
    """Untrusted source with line numbers, made inert, highlighted unless `plain`."""
    program = inert(program)
    code = Text(program) if plain else highlight(program, language)
    lines = code.split("\n", allow_blank=True)
    width = len(str(len(lines)))
    numbered = Text()
    for number, line in enumerate(lines, start=1):
        numbered.append(f"{number:>{width}} ", style="dim")
        numbered.append_text(line)
        numbered.append("\n")
    return numbered


def verdict(node: Node) -> Text:
    """A generation's "kept"/"reverted", and why when its record says."""
    word = "kept" if node.kept else "reverted"
    text = Text(word, style="green" if node.kept else "red")
    if node.reason:
        text.append(f": {inert(node.reason)}")
    return text


def proposals(view: RunView, node: Node, expand: bool = False) -> RenderableType:
    """What `stop show` adds after a generation's source: why it was kept or reverted,
    and what it was chosen from."""
    parts: list[RenderableType] = []
    if node.parent is not None:
        parts.append(Text.assemble(f"{view.noun} {node.gen}: ", verdict(node)))
    if node.status != "ok" and node.error:
        parts.append(Text(f"improver: {node.status}: {inert(node.error)}", style="red"))
    parts.extend(Text(f"improver: {inert(f)}", style="yellow") for f in node.improver_findings)
    if node.candidates:
        parts.append(proposals_table(node, expand))
        # The command first: where the line wraps, the words after it move, not it.
        command = f"stop show {view.id} {node.gen} --proposal N"
        parts.append(Text(f"{command}: proposal N's source", style="dim"))
    return Group(*parts)


def proposal_source(
    view: RunView, node: Node, index: int, diff: bool = False, plain: bool = False
) -> RenderableType:
    """Proposal `index` of a generation's round: status, scores and error, then its
    source, or its diff against the improver it was proposed for (the parent's)."""
    p = view.proposal(node, index)
    head = Text(f"{view.noun} {node.gen}, proposal {index} ({inert(p.origin)}): ", style="bold")
    head.append(f"{p.status}, val {fmt(p.val)}, test {fmt(p.test)}")
    parts: list[RenderableType] = [head]
    if p.error:
        parts.append(Text(f"error: {inert(p.error)}", style="red"))
    parts.extend(Text(f"audit: {inert(a)}", style="yellow") for a in p.audit)
    program = view.proposal_source(p)
    if program is None:
        why = "the reply held no code" if p.status == "no_code" else "its source was not kept"
        parts.append(Text(f"proposal {index} has no source ({why})", style="dim"))
        return Group(*parts)
    parts.append(Text(f"source: {inert(p.path)}", style="dim"))
    parent = view.parent_of(node)
    if diff and parent is not None:
        changes = "".join(
            difflib.unified_diff(
                view.source(parent).splitlines(keepends=True),
                program.splitlines(keepends=True),
                fromfile=f"{view.noun} {parent.gen}",
                tofile=f"proposal {index}",
            )
        )
        text = inert(changes) or "the same as its parent"
        parts.append(Text(text) if plain or not changes else highlight(text, "diff"))
    else:
        parts.append(numbered(program, "python", plain))
    return Group(*parts)


def highlight(code: str, language: str) -> Text:
    return Syntax(code, language, theme="ansi_dark").highlight(code.rstrip("\n"))


def chart(view: RunView, width: int, height: int) -> str:
    """A plotext line chart of the utility per generation (ANSI text)."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("pro")
    gens = [n.gen for n in view.nodes if n.val is not None]
    if gens:
        plt.plot(gens, [n.val for n in view.nodes if n.val is not None], label="val", marker="dot")
        tests = [(n.gen, n.test) for n in view.nodes if n.test is not None]
        if tests:
            plt.plot([g for g, _ in tests], [t for _, t in tests], label="test", marker="dot")
    titles = {"self-improve": "meta-utility per generation", "exit": "mean solve rate"}
    plt.title(titles.get(view.kind, "score"))
    plt.xlabel("iteration" if view.kind == "exit" else "generation")
    return plt.build()
