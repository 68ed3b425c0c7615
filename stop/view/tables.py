"""Tables of runs and of a round's proposals that fit the width they are drawn at (a
terminal's, a pane of the terminal UI, a pipe's): a less needed column goes before every
cell is cut to a letter or two, and an id or a path is never cut."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from stop.view.inert import inert
from stop.view.runview import Node, RunView

_STATUS_STYLE = {
    "finished": "green",
    "running": "cyan",
    "failed": "red",
    "interrupted": "yellow",
    "killed": "red",
}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class Fitted:
    """A table made for the width it is drawn at (a terminal's, a pane's), so that it
    leaves out its least needed columns rather than cutting every cell to a letter or two."""

    def __init__(self, build: Callable[[int], RenderableType]) -> None:
        self.build = build

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        yield self.build(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.build(options.max_width))


_RUN_COLUMNS = ("id", "date", "kind", "model", "rounds", "best", "status")
_MODEL_MIN = 10  # characters of a model's name kept, with an ellipsis, before it goes
_GAP = 2  # characters between two columns of the runs table
_STAMPED = re.compile(r"\d{8}-\d{6}-(.+)-[0-9a-f]{6}")  # the run store's ids: date, kind


def runs_table(views: list[RunView]) -> RenderableType:
    """id, date, kind, model, rounds, best, status. Where that is too wide, the date and
    the kind go first when every id shows them (the run store's ids do), then the
    model, then the rest but the id, best and status; the id is never cut."""
    return Fitted(lambda width: _runs_table(views, width))


def _runs_table(views: list[RunView], width: int) -> Table:
    rows = [_run_row(v) for v in views]
    natural = {c: max([len(c), *(len(r[c].plain) for r in rows)]) for c in _RUN_COLUMNS}

    def needed(columns: list[str]) -> int:
        cells = [min(natural[c], _MODEL_MIN) if c == "model" else natural[c] for c in columns]
        return sum(cells) + _GAP * (len(columns) - 1)

    stamps = [_STAMPED.fullmatch(v.id) for v in views]
    in_ids = {
        "date": all(stamps),
        "kind": all(m and m.group(1) == v.kind for m, v in zip(stamps, views, strict=True)),
    }
    drop = [c for c in ("kind", "date") if in_ids[c]] + ["model", "kind", "date", "rounds"]
    columns = list(_RUN_COLUMNS)
    for column in drop:
        if needed(columns) <= width:
            break
        if column in columns:
            columns.remove(column)
    table = Table(
        title="Runs",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, _GAP - 1, 0, 0),  # with the divider, _GAP between columns
    )
    for column in columns:
        # The model's name is cut to what is left; every other cell is shown whole.
        room = width - needed([c for c in columns if c != "model"]) - _GAP
        table.add_column(
            column,
            justify="right" if column in ("rounds", "best") else "left",
            no_wrap=True,
            overflow="ellipsis" if column == "model" else "fold",
            max_width=max(room, _MODEL_MIN) if column == "model" else None,
        )
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table


def _run_row(v: RunView) -> dict[str, Text]:
    best = v.best
    rounds = "-"
    if v.kind == "self-improve":
        rounds = f"{max(len(v.nodes) - 1, 0)}/{v.rounds}"
    elif v.kind == "exit":  # iterations done, of those planned
        rounds = f"{v.nodes[-1].gen if v.nodes else 0}/{v.rounds}"
    return {
        "id": Text(inert(v.id)),
        "date": Text(v.started.strftime("%m-%d %H:%M")),
        "kind": Text(v.kind),
        "model": Text(inert(v.model)),
        "rounds": Text(rounds),
        "best": Text(fmt(best.val if best else None)),
        "status": Text(v.status, style=_STATUS_STYLE.get(v.status, "")),
    }


def last_line(text: str | None, limit: int = 100) -> str:
    """An error's last non-empty line (a traceback's names the exception), trimmed."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if len(lines[-1]) <= limit else lines[-1][: limit - 1] + "…"


_ERROR_MIN = 20  # characters of a proposals table's error column, or its sources go


def proposals_table(node: Node, expand: bool = False) -> RenderableType:
    """The proposals of the round that made a generation: status, scores, error, where
    its source is (the improver and the model wrote every cell but the numbers). A path
    is never cut: where the error would be squeezed under _ERROR_MIN, the sources are
    left out (`stop show --proposal N` prints one)."""
    return Fitted(lambda width: _proposals_table(node, width, expand))


def _proposals_table(node: Node, width: int, expand: bool) -> Table:
    rows = []
    for index, c in enumerate(node.candidates):
        flags = (["sandbox-off attempt"] if c.circumvented else []) + c.findings
        error = "; ".join([last_line(c.error), *flags]) if c.error else "; ".join(flags)
        rows.append(
            [str(index), inert(c.origin), c.status, fmt(c.val), fmt(c.test), inert(error)]
            + [inert(c.path or "-")]
        )
    columns = ["#", "origin", "status", "val", "test", "error, findings", "source"]
    widths = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(columns)]
    # Each cell has a space either side and a rule after it; the table one rule more.
    fixed = sum(widths[:5]) + widths[6] + 3 * len(columns) + 1
    shown = len(columns) if fixed + _ERROR_MIN <= width else len(columns) - 1
    table = Table(title="Proposals of its round", title_justify="left", expand=expand)
    for name in columns[:shown]:
        table.add_column(
            name,
            justify="right" if name in ("#", "val", "test") else "left",
            no_wrap=name != "error, findings",
        )
    for row in rows:
        table.add_row(*(Text(cell) for cell in row[:shown]))
    return table
