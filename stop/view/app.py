"""`stop view`: the Textual UI over one run. A tree of generations on the left; on the
right the selected generation's code, its diff, its candidates and tests, the model
exchanges of the round that made it, and a chart of the utility per generation.
Everything is reachable from the keyboard; a run still in progress is re-read every
few seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Static, Tab, Tabs, Tree
from textual.widgets.tree import TreeNode

from stop.errors import BadInput
from stop.llm.prices import spending
from stop.view import render, tables
from stop.view.inert import inert
from stop.view.runs import read_run
from stop.view.runview import Node, RunView

TABS = ("code", "diff", "candidates", "exchanges", "chart")
REFRESH_S = 3.0  # how often a running run is re-read
EXCHANGE_CHARS = 4000  # of each prompt and answer shown; the log has them whole


class LineageApp(App[None]):
    TITLE = "stop view"
    CSS = """
    #generations { width: 45%; min-width: 40; border-right: solid $primary; }
    #summary { height: auto; max-height: 8; padding: 0 1; background: $boost; }
    #body { padding: 0 1; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        *(
            Binding(str(i), f"tab('{name}')", name.capitalize())
            for i, name in enumerate(TABS, start=1)
        ),
        Binding("tab", "focus_next", "Next pane", show=False),
        Binding("r", "reload", "Reload"),
        Binding("b", "best", "Best"),
    ]

    def __init__(self, view: RunView) -> None:
        super().__init__()
        self.view = view
        self.selected: Node | None = None
        self.tab = "code"
        self._exchanges: dict[int | None, list[dict[str, Any]]] | None = None

    def compose(self) -> ComposeResult:
        # One body for all tabs: each view is made when it is shown, so start-up builds
        # only the tree and the code of the first generation.
        yield Header()
        with Horizontal():
            yield Tree("generations", id="generations")
            with Vertical():
                yield Static(id="summary")
                yield Tabs(*(Tab(name.capitalize(), id=name) for name in TABS))
                with VerticalScroll(id="scroll"):
                    yield Static(id="body")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"{self.view.id}  ({self.view.kind}, {self.view.model})"
        self._fill_tree()
        self.query_one(Tree).focus()
        if self.view.status == "running":
            self.set_interval(REFRESH_S, self.action_reload)

    def _fill_tree(self) -> None:
        tree: Tree[int] = self.query_one(Tree)
        tree.clear()
        tree.root.set_label(render.title(self.view))
        branches: dict[int | None, TreeNode[int]] = {}
        placed = render.placement(self.view)
        has_children = {parent for _, parent in placed}
        for node, under in placed:
            parent = branches.get(under, tree.root)
            label = render.node_label(self.view, node)
            branches[node.gen] = parent.add(
                label, data=node.gen, expand=True, allow_expand=node.gen in has_children
            )
        if self.view.in_progress is not None:
            pending = f"{render.short(self.view)} {self.view.in_progress}  in progress"
            tree.root.add_leaf(Text(pending, style="cyan"))
        tree.root.expand()
        first = self.selected or (self.view.nodes[0] if self.view.nodes else None)
        if first is not None and first.gen in branches:
            tree.move_cursor(branches[first.gen])
            self._select(first.gen)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data is not None:
            self._select(event.node.data)

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if (event.tab.id or "code") != self.tab:  # Tabs announces its first tab at start
            self.tab = event.tab.id or "code"
            self._show()

    def _select(self, gen: int) -> None:
        node = self.selected = self.view.node(gen)
        self._update("#summary", lambda: self._summary(node))
        self._show()

    def _update(self, widget: str, make: Callable[[], RenderableType]) -> None:
        """Fill a widget; where a file of the run cannot be read (damaged, or gone since
        the run was opened), say so there instead of ending the whole UI."""
        try:
            content = make()
        except BadInput as exc:
            content = Text(inert(str(exc)), style="red")
        self.query_one(widget, Static).update(content)

    def _show(self) -> None:
        """Fill the body with the current tab's view of the selected generation."""
        node, view, body = self.selected, self.view, self.query_one("#body", Static)
        if node is None:
            return
        if self.tab in ("code", "diff"):
            # Plain text now, colours after the next paint: lexing is the slow part, and
            # a user holding the arrow key should see the code follow.
            diff = self.tab == "diff"
            self._update("#body", lambda: render.source(view, node, diff=diff, plain=True))
            self.call_after_refresh(self._highlight, node, self.tab)
        elif self.tab == "candidates":
            self._update("#body", lambda: candidates(view, node))
        elif self.tab == "exchanges":
            body.update(Text("reading the model exchanges…", style="dim"))
            self._show_exchanges(node.gen)
        else:
            body.update(Text("drawing…", style="dim"))
            self._draw_chart()

    def _highlight(self, node: Node, tab: str) -> None:
        if node is self.selected and tab == self.tab:
            self._update("#body", lambda: render.source(self.view, node, diff=tab == "diff"))

    def _summary(self, node: Node) -> RenderableType:
        lines: list[RenderableType] = [render.node_label(self.view, node)]
        if self.view.kind == "self-improve" and node.parent is not None and node.reason:
            lines.append(render.verdict(node))  # the tree's one line per node has no room
        if node.error:
            whose = {"self-improve": "improver", "exit": "iteration"}.get(
                self.view.kind, "evaluation"
            )
            lines.append(Text(f"{whose}: {node.status}: {inert(node.error)}", style="red"))
        spent = spending(node.usd, node.usd_cached)
        if spent is not None:  # the label has the sum; this says what of it was replayed
            # An improve run's spending is the run's, kept on its original.
            whose = "the whole run" if self.view.kind == "improve" else f"this {self.view.noun}"
            lines.append(Text(f"model spending, {whose}: {spent}", style="dim"))
        lines.extend(Text(f"audit: {inert(a)}", style="yellow") for a in node.audit)
        lines.extend(Text(f"finding: {inert(f)}", style="yellow") for f in node.findings)
        lines.extend(Text(f"improver: {inert(f)}", style="yellow") for f in node.improver_findings)
        return Group(*lines)

    def _fill_body(self, tab: str, gen: int, content: RenderableType) -> None:
        # A worker's result arrives late: it is shown only if the user is still there.
        if self.tab == tab and self.selected is not None and self.selected.gen == gen:
            self.query_one("#body", Static).update(content)

    @work(thread=True, exclusive=True, group="exchanges")
    def _show_exchanges(self, gen: int) -> None:
        # The log can be large: it is read once, off the UI thread, and grouped by round.
        if self._exchanges is None:
            try:
                logged = self.view.exchanges()
            except BadInput as exc:
                error = Text(inert(str(exc)), style="red")
                self.call_from_thread(self._fill_body, "exchanges", gen, error)
                return
            grouped: dict[int | None, list[dict[str, Any]]] = {}
            for entry in logged:
                grouped.setdefault(entry.get("gen"), []).append(entry)
            self._exchanges = grouped
        entries = self._exchanges.get(gen if self.view.kind == "self-improve" else None, [])
        self.call_from_thread(self._fill_body, "exchanges", gen, exchanges(entries))

    @work(thread=True, exclusive=True, group="chart")
    def _draw_chart(self) -> None:
        width = max(self.size.width * 55 // 100 - 4, 40)
        text = Text.from_ansi(render.chart(self.view, width, 20))
        gen = self.selected.gen if self.selected else -1
        self.call_from_thread(self._fill_body, "chart", gen, text)

    def action_tab(self, name: str) -> None:
        self.query_one(Tabs).active = name

    def action_best(self) -> None:
        if self.view.best is not None:
            self.selected = self.view.best
            self._fill_tree()

    def action_reload(self) -> None:
        try:
            fresh = read_run(self.view.dir)
            if fresh.nodes == self.view.nodes and fresh.status == self.view.status:
                return
            fresh.read_sources()  # the tree's labels read them all
        except BadInput as exc:  # the run as it was stays on the screen
            self.notify(str(exc), title="cannot re-read the run", severity="error")
            return
        self.view, self._exchanges = fresh, None
        self._fill_tree()


def candidates(view: RunView, node: Node) -> RenderableType:
    """What a generation was chosen from, and (self-improve) its meta-utility tests; an
    iteration's solve rate per task, with the change since the iteration before."""
    parts: list[RenderableType] = []
    if node.candidates:
        parts.append(tables.proposals_table(node, expand=True))
    if node.tests:
        table = Table(title="Meta-utility tests", title_justify="left", expand=True)
        for column in ("task", "#", "improver", "val", "test", "error"):
            table.add_column(column)
        for t in node.tests:
            error = Text(inert((t.error or "")[:60]))
            table.add_row(
                t.task,
                str(t.index),
                t.improver_status,
                render.fmt(t.val),
                render.fmt(t.test),
                error,
            )
        parts.append(table)
    parts.extend(rejected_sources(view, node))
    if view.kind == "exit":
        parts.append(solve_rates(view, node))
    if view.kind == "improve":
        siblings = [n for n in view.nodes if n.parent == node.gen or n.gen == node.gen]
        table = Table(title="Candidates of the run", title_justify="left", expand=True)
        for column in ("#", "status", "score", "time", "detail"):
            table.add_column(column)
        for n in siblings if node.parent is None else [node]:
            table.add_row(
                str(n.gen),
                n.status,
                render.fmt(n.val),
                f"{n.seconds:.2f}s",
                Text(inert((n.error or "")[:60])),
            )
        parts.append(table)
        if "archive" in view.records:
            parts.append(render.archive_table(view.records["archive"]))
    return Group(*parts) if parts else Text("no candidates recorded", style="dim")


def rejected_sources(view: RunView, node: Node) -> list[RenderableType]:
    """The sources of the proposals a generation's round made that are not the generation
    itself (its own is on the code tab), each under its status and error."""
    parts: list[RenderableType] = []
    for index, c in enumerate(node.candidates):
        if c.origin != "model" or c.path is None or c.path == node.path:
            continue
        head = f"proposal {index}: {c.status}, val {render.fmt(c.val)}, {inert(c.path)}"
        parts.append(Text(head, style="bold"))
        if c.error:
            parts.append(Text(inert(c.error), style="red"))
        parts.append(render.numbered(view.proposal_source(c) or "", "python", plain=True))
    return parts


def solve_rates(view: RunView, node: Node) -> Table:
    parent = view.parent_of(node)
    before = parent.solve_rates if parent else {}
    table = Table(title="Solve rates (greedy decoding)", title_justify="left", expand=True)
    for column in ("task", "solve rate", "Δ", ""):
        table.add_column(column)
    for task, rate in node.solve_rates.items():
        delta = f"{rate - before[task]:+.3f}" if task in before else ""
        table.add_row(task, render.fmt(rate), delta, "solved" if rate == 1.0 else "")
    return table


def exchanges(entries: list[dict[str, Any]]) -> RenderableType:
    if not entries:
        return Text("no model exchanges logged for this generation", style="dim")
    parts: list[RenderableType] = []
    for i, e in enumerate(entries, start=1):
        head = f"#{i} {e.get('role', 'model')}  sample {e.get('sample')}  T={e.get('temperature')}"
        if e.get("cached"):
            head += "  (cached)"
        parts.append(Text(head, style="bold"))
        parts.append(Text(inert(_trim(e.get("user", ""))), style="cyan"))
        if "error" in e:
            parts.append(Text(f"failed: {inert(e['error'])}", style="red"))
        else:
            parts.append(Text(inert(_trim(e.get("text", "")))))
        parts.append(Text(""))
    return Group(*parts)


def _trim(text: str) -> str:
    if len(text) <= EXCHANGE_CHARS:
        return text
    rest = len(text) - EXCHANGE_CHARS
    return text[:EXCHANGE_CHARS] + f"\n… ({rest} more characters in llm.jsonl)"
