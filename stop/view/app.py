"""`stop view`: the Textual UI over one run. A tree of generations on the left; on the
right the selected generation's code, its diff, its candidates and tests, the model
exchanges of the round that made it, and a chart of the utility per generation.
Everything is reachable from the keyboard; a run still in progress is re-read every
few seconds.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane, Tree

from stop.view import render
from stop.view.runs import Node, RunView, read_run

TABS = ("code", "diff", "candidates", "exchanges", "chart")
REFRESH_S = 3.0  # how often a running run is re-read
EXCHANGE_CHARS = 4000  # of each prompt and answer shown; the log has them whole


class LineageApp(App[None]):
    TITLE = "stop view"
    CSS = """
    #generations { width: 45%; min-width: 40; border-right: solid $primary; }
    #summary { height: auto; max-height: 8; padding: 0 1; background: $boost; }
    TabPane { padding: 0; }
    VerticalScroll { padding: 0 1; }
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
        self._exchanges: dict[int | None, list[dict[str, Any]]] | None = None
        self._chart_drawn = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield Tree("generations", id="generations")
            with Vertical():
                yield Static(id="summary")
                with TabbedContent(initial="code"):
                    for name in TABS:
                        with TabPane(name.capitalize(), id=name), VerticalScroll():
                            yield Static(id=f"{name}-body")
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
        tree.root.set_label(render.lineage_tree(self.view).label)
        branches = {}
        placed = render.placement(self.view)
        has_children = {parent for _, parent in placed}
        for node, under in placed:
            parent = branches.get(under, tree.root)
            label = render.node_label(self.view, node)
            branches[node.gen] = parent.add(label, data=node.gen, expand=True,
                                            allow_expand=node.gen in has_children)  # fmt: skip
        if self.view.in_progress is not None:
            tree.root.add_leaf(Text(f"gen {self.view.in_progress}  in progress", style="cyan"))
        tree.root.expand()
        first = self.selected or (self.view.nodes[0] if self.view.nodes else None)
        if first is not None and first.gen in branches:
            tree.move_cursor(branches[first.gen])
            self._select(first.gen)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data is not None:
            self._select(event.node.data)

    def _select(self, gen: int) -> None:
        view = self.view
        node = self.selected = view.node(gen)
        self.query_one("#summary", Static).update(self._summary(node))
        self.query_one("#code-body", Static).update(render.source(view, node))
        self.query_one("#diff-body", Static).update(render.source(view, node, diff=True))
        self.query_one("#candidates-body", Static).update(candidates(view, node))
        if self._active() == "exchanges":
            self._show_exchanges(gen)

    def _active(self) -> str:
        return self.query_one(TabbedContent).active

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # The log and the chart cost the most: each is made only when its tab is shown, so
        # the UI starts at once on a long run.
        if event.pane.id == "exchanges" and self.selected is not None:
            self._show_exchanges(self.selected.gen)
        elif event.pane.id == "chart" and not self._chart_drawn:
            self._draw_chart()

    def _summary(self, node: Node) -> RenderableType:
        lines: list[RenderableType] = [render.node_label(self.view, node)]
        if node.error:
            lines.append(Text(f"improver: {node.status}: {node.error}", style="red"))
        lines.extend(Text(f"audit: {a}", style="yellow") for a in node.audit)
        lines.extend(Text(f"finding: {f}", style="yellow") for f in node.findings)
        return Group(*lines)

    @work(thread=True, exclusive=True, group="exchanges")
    def _show_exchanges(self, gen: int) -> None:
        # The log can be large: it is read once, off the UI thread, and grouped by round.
        if self._exchanges is None:
            grouped: dict[int | None, list[dict[str, Any]]] = {}
            for entry in self.view.exchanges():
                grouped.setdefault(entry.get("gen"), []).append(entry)
            self._exchanges = grouped
        entries = self._exchanges.get(gen if self.view.kind == "self-improve" else None, [])
        self.call_from_thread(self.query_one("#exchanges-body", Static).update, exchanges(entries))

    @work(thread=True, exclusive=True, group="chart")
    def _draw_chart(self) -> None:
        self._chart_drawn = True
        width = max(self.size.width * 55 // 100 - 4, 40)
        text = Text.from_ansi(render.chart(self.view, width, 20))
        self.call_from_thread(self.query_one("#chart-body", Static).update, text)

    def action_tab(self, name: str) -> None:
        self.query_one(TabbedContent).active = name

    def action_best(self) -> None:
        if self.view.best is not None:
            self.selected = self.view.best
            self._fill_tree()

    def action_reload(self) -> None:
        fresh = read_run(self.view.dir)
        if fresh.nodes != self.view.nodes or fresh.status != self.view.status:
            self.view, self._exchanges, self._chart_drawn = fresh, None, False
            self._fill_tree()
            if self._active() == "chart":
                self._draw_chart()


def candidates(view: RunView, node: Node) -> RenderableType:
    """What a generation was chosen from, and (self-improve) its meta-utility tests."""
    parts: list[RenderableType] = []
    if node.candidates:
        table = Table(title="Proposals of its round", title_justify="left", expand=True)
        for column in ("origin", "sha256", "status", "val", "flags"):
            table.add_column(column)
        for c in node.candidates:
            flags = ["sandbox-off attempt"] if c.get("circumvented") else []
            flags = "; ".join(flags + list(c.get("findings") or []))
            table.add_row(c.get("origin", ""), c.get("sha256") or "-", c.get("status", ""),
                          render.fmt(c.get("val")), flags)  # fmt: skip
        parts.append(table)
    if node.tests:
        table = Table(title="Meta-utility tests", title_justify="left", expand=True)
        for column in ("task", "#", "improver", "val", "test", "error"):
            table.add_column(column)
        for t in node.tests:
            table.add_row(t["task"], str(t["index"]), t["improver_status"], render.fmt(t["val"]),
                          render.fmt(t["test"]), (t.get("error") or "")[:60])  # fmt: skip
        parts.append(table)
    if view.kind == "improve":
        siblings = [n for n in view.nodes if n.parent == node.gen or n.gen == node.gen]
        table = Table(title="Candidates of the run", title_justify="left", expand=True)
        for column in ("#", "status", "score", "time", "detail"):
            table.add_column(column)
        for n in siblings if node.parent is None else [node]:
            table.add_row(str(n.gen), n.status, render.fmt(n.val), f"{n.seconds:.2f}s",
                          (n.error or "")[:60])  # fmt: skip
        parts.append(table)
    return Group(*parts) if parts else Text("no candidates recorded", style="dim")


def exchanges(entries: list[dict[str, Any]]) -> RenderableType:
    if not entries:
        return Text("no model exchanges logged for this generation", style="dim")
    parts: list[RenderableType] = []
    for i, e in enumerate(entries, start=1):
        head = f"#{i} {e.get('role', 'model')}  sample {e.get('sample')}  T={e.get('temperature')}"
        if e.get("cached"):
            head += "  (cached)"
        parts.append(Text(head, style="bold"))
        parts.append(Text(_trim(e.get("user", "")), style="cyan"))
        if "error" in e:
            parts.append(Text(f"failed: {e['error']}", style="red"))
        else:
            parts.append(Text(_trim(e.get("text", ""))))
        parts.append(Text(""))
    return Group(*parts)


def _trim(text: str) -> str:
    if len(text) <= EXCHANGE_CHARS:
        return text
    rest = len(text) - EXCHANGE_CHARS
    return text[:EXCHANGE_CHARS] + f"\n… ({rest} more characters in llm.jsonl)"
