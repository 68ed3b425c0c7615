"""`stop export --html`: one self-contained page (no network at view time) with the
lineage graph, the score per generation, and every generation's code and diff.

The graph and the chart are drawn by the page's own script from the run's data, which
is embedded as JSON. Generated code is hostile: it reaches the page only escaped
(pygments' HTML, json with `<` escaped), and the script sets text, never HTML.
"""

from __future__ import annotations

import html
import json

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer, PythonLexer, TextLexer

from stop.llm.prices import spending, usd
from stop.view.inert import inert
from stop.view.runview import Node, RunView

_FORMATTER = HtmlFormatter(noclasses=True, nobackground=True, style="default")

_CSS = """
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
.meta { color: #555; }
svg { background: #fafafa; border: 1px solid #ddd; }
svg text { font: 11px monospace; }
.kept circle { fill: #2e7d32; } .reverted circle { fill: #bbb; }
.circumvented circle { fill: #c62828; }
.edge { stroke: #999; stroke-width: 1.5; fill: none; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee; }
th { text-align: left; } td.num { text-align: right; font-family: monospace; }
details { margin: .5em 0; } summary { cursor: pointer; font-family: monospace; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 12px; }
.warn { color: #c62828; font-weight: bold; } .reason { color: #555; }
"""

# Draws the lineage (x: generation, y: kept on top, reverted below) and the score chart.
_SCRIPT = """
const run = JSON.parse(document.getElementById('run-data').textContent);
const NS = 'http://www.w3.org/2000/svg';
function el(name, attrs, parent) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent.appendChild(e); return e;
}
function drawLineage() {
  const svg = document.getElementById('lineage');
  const step = 46, top = 40, lane = 70;
  const width = 60 + step * Math.max(run.nodes.length, 1);
  svg.setAttribute('width', width); svg.setAttribute('height', top + 2 * lane);
  const pos = {};
  run.nodes.forEach((n, i) => { pos[n.gen] = [30 + i * step, top + (n.kept ? 0 : lane)]; });
  for (const n of run.nodes) {
    if (n.parent === null || !(n.parent in pos)) continue;
    const [x1, y1] = pos[n.parent], [x2, y2] = pos[n.gen];
    const mid = (x1 + x2) / 2;
    el('path', {class: 'edge', d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`}, svg);
  }
  for (const n of run.nodes) {
    const [x, y] = pos[n.gen];
    const cls = n.circumvented ? 'circumvented' : (n.kept ? 'kept' : 'reverted');
    const a = el('a', {href: '#gen-' + n.gen, class: 'node ' + cls, 'data-gen': n.gen}, svg);
    el('circle', {cx: x, cy: y, r: 9}, a);
    const label = el('text', {x: x, y: y - 14, 'text-anchor': 'middle'}, a);
    label.textContent = String(n.gen);
    const score = el('text', {x: x, y: y + 22, 'text-anchor': 'middle'}, a);
    score.textContent = n.val === null ? '-' : n.val.toFixed(2);
    const title = el('title', {}, a);
    title.textContent = `${run.noun} ${n.gen}: ${n.strategy}` + (n.reason ? `; ${n.reason}` : '');
  }
}
function drawChart() {
  const svg = document.getElementById('chart');
  const w = 640, h = 220, pad = 36;
  svg.setAttribute('width', w); svg.setAttribute('height', h);
  const pts = run.nodes.filter(n => n.val !== null);
  if (!pts.length) return;
  const all = pts.flatMap(n => n.test === null ? [n.val] : [n.val, n.test]);
  let lo = Math.min(...all), hi = Math.max(...all); if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const maxGen = Math.max(1, ...pts.map(n => n.gen));
  const X = g => pad + (w - 2 * pad) * g / maxGen;
  const Y = v => h - pad - (h - 2 * pad) * (v - lo) / (hi - lo);
  el('line', {x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, stroke: '#999'}, svg);
  el('line', {x1: pad, y1: pad, x2: pad, y2: h - pad, stroke: '#999'}, svg);
  for (const [v, yv] of [[lo, h - pad], [hi, pad]]) {
    const t = el('text', {x: 2, y: yv + 4}, svg); t.textContent = v.toFixed(2);
  }
  const series = [['val', '#1565c0', n => n.val]];
  if (pts.some(n => n.test !== null)) series.push(['test', '#ef6c00', n => n.test]);
  series.forEach(([name, color, get], k) => {
    const p = pts.filter(n => get(n) !== null).map(n => `${X(n.gen)},${Y(get(n))}`).join(' ');
    el('polyline', {class: 'series', points: p, fill: 'none', stroke: color,
                    'stroke-width': 2}, svg);
    const t = el('text', {x: pad + 10 + 40 * k, y: pad - 8, fill: color}, svg);
    t.textContent = name;
  });
}
drawLineage(); drawChart();
"""


def _code(text: str, kind: str) -> str:
    lexer = {"python": PythonLexer(), "diff": DiffLexer()}.get(kind, TextLexer())
    # Pygments escapes markup but keeps control characters: made visible, as on a terminal.
    return highlight(inert(text), lexer, _FORMATTER)


def _archive(archive: object) -> str:
    """The archive's cells as a table (the improver wrote it: every value is escaped)."""
    try:
        cells = [
            (list(c["cell"]), float(c["score"]), c.get("lines"), c.get("seconds"))
            for c in archive["cells"]  # type: ignore[index]
        ]
    except (KeyError, TypeError, ValueError):
        return "<p>records/archive.json does not hold a MAP-Elites archive.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(str(cell))}</td><td class='num'>{score:.3f}</td>"
        f"<td class='num'>{html.escape(str(lines))}</td>"
        f"<td class='num'>{html.escape(str(seconds))}</td></tr>"
        for cell, score, lines, seconds in cells
    )
    return (
        f"<table><tr><th>cell</th><th>score</th><th>lines</th><th>seconds</th></tr>{rows}</table>"
    )


def _proposals(view: RunView, node: Node) -> str:
    """A generation's round: why it was kept or reverted, its proposals with statuses,
    errors and scores, and the source of each one that is not the generation itself.
    The improver and the model wrote the texts: every one is escaped, and its control
    characters made visible (a page may be read as text, in a terminal)."""

    def e(text: object) -> str:
        return html.escape(inert(text))

    if view.kind != "self-improve":
        return ""
    out = ""
    if node.parent is not None and node.reason:
        word = "Kept" if node.kept else "Reverted"
        out += f"<p class='reason'>{word}: {e(node.reason)}</p>"
    if node.status != "ok" and node.error:
        out += f"<p class='warn'>The improver proposing it: {e(node.status)}: {e(node.error)}</p>"
    out += "".join(f"<p class='reason'>The improver: {e(f)}</p>" for f in node.improver_findings)
    if not node.candidates:
        return out
    rows = []
    sources = []
    for i, c in enumerate(node.candidates):
        rows.append(
            f"<tr class='proposal {e(c.status)}'><td class='num'>{i}</td><td>{e(c.origin)}</td>"
            f"<td>{e(c.status)}</td><td class='num'>{c.val:.3f}</td>"
            f"<td class='num'>{'-' if c.test is None else f'{c.test:.3f}'}</td>"
            f"<td><code>{e(c.error or '')}</code></td><td>{e(c.path or '-')}</td></tr>"
        )
        # The generation's own source is above; the original is its parent's.
        if c.origin == "model" and c.path is not None and c.path != node.path:
            sources.append(
                f"<details><summary>proposal {i} ({e(c.status)}) source ({e(c.path)})"
                f"</summary>{_code(view.proposal_source(c) or '', 'python')}</details>"
            )
    return (
        out + "<table><tr><th>#</th><th>origin</th><th>status</th><th>val</th><th>test</th>"
        f"<th>error</th><th>source</th></tr>{''.join(rows)}</table>{''.join(sources)}"
    )


def export_html(view: RunView) -> str:
    nodes = [
        {
            "gen": n.gen,
            "parent": n.parent,
            "val": n.val,
            "test": n.test,
            "kept": n.kept,
            "circumvented": n.circumvented,
            "strategy": view.strategy(n),
            "reason": n.reason,
        }
        for n in view.nodes
    ]
    # `<` escaped so that no string in the data can close the script element.
    noun = "iteration" if view.kind == "exit" else "generation"
    data = json.dumps({"id": view.id, "noun": noun, "nodes": nodes}).replace("<", "\\u003c")
    e = html.escape
    # Money only where the run was priced: a local run's page stays as it was. An
    # improve run's spending is the run's, shown on its original.
    spent = spending(view.usd, view.usd_cached)
    spent_meta = f" · model spending {e(spent)}" if spent else ""
    rows, sections = [], []
    for n in view.nodes:
        delta = view.delta(n)
        verdict = "kept" if n.kept else "reverted"
        if view.kind == "self-improve" and n.parent is not None and n.reason:
            verdict += f": {inert(n.reason)}"
        if view.kind == "improve":
            verdict = "chosen" if n.kept else n.status
        elif view.kind == "exit":  # every iteration is kept: what it solved says more
            verdict = view.strategy(n)
        rows.append(
            f"<tr><td><a href='#gen-{n.gen}'>{n.gen}</a></td>"
            f"<td>{'' if n.parent is None else n.parent}</td>"
            f"<td class='num'>{'-' if n.val is None else f'{n.val:.3f}'}</td>"
            f"<td class='num'>{'-' if n.test is None else f'{n.test:.3f}'}</td>"
            f"<td class='num'>{'' if delta is None else f'{delta:+.3f}'}</td>"
            f"<td>{e(verdict)}</td><td class='num'>{n.tokens:,}</td>"
            + (f"<td class='num usd'>{usd(n.usd) if n.usd else ''}</td>" if spent else "")
            + f"<td>{e(view.strategy(n))}</td></tr>"
        )
        warn = (
            "<p class='warn'>This improver tried to switch the sandbox off.</p>"
            if n.circumvented
            else ""
        )
        notes = "".join(f"<li>{e(a)}</li>" for a in [*n.audit, *n.findings])
        kind = "python" if (n.path or "").endswith(".py") else "text"
        diff = view.diff(n)
        # An iteration has no program: its source is its solve rates (RunView.source).
        what = "solve rates" if view.kind == "exit" else f"source ({e(n.path or 'none')})"
        sections.append(
            f"<h2 id='gen-{n.gen}'>{e(noun.capitalize())} {n.gen}</h2>{warn}"
            + (f"<ul>{notes}</ul>" if notes else "")
            + (
                f"<details open><summary>diff against {e(noun)} {n.parent}</summary>"
                f"{_code(diff, 'diff')}</details>"
                if diff
                else ""
            )
            + f"<details><summary>{what}</summary>"
            f"{_code(view.source(n), kind)}</details>" + _proposals(view, n)
        )
    best = view.best
    extra = "".join(f"<p class='warn'>{e(w)}</p>" for w in view.warnings)
    if "archive" in view.records:
        extra += f"<h2>MAP-Elites archive</h2>{_archive(view.records['archive'])}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>stop run {e(view.id)}</title><style>{_CSS}</style></head>
<body>
<h1>Run {e(view.id)}</h1>
<p class="meta">{e(view.kind)} · model {e(view.model)} · {e(view.status)} ·
started {view.started:%Y-%m-%d %H:%M} · {len(view.nodes)} {noun}s ·
best: {"-" if best is None else f"{noun} {best.gen} ({best.val or 0:.3f})"}{spent_meta}</p>
<h2>Lineage</h2>
<p class="meta">Green: kept; grey: reverted; red: tried to switch the sandbox off.
Numbers above: generation; below: validation score.</p>
<div style="overflow-x: auto"><svg id="lineage" role="img" aria-label="lineage graph"></svg></div>
<h2>Score per {noun}</h2>
<svg id="chart" role="img" aria-label="score per generation"></svg>
<h2>{noun.capitalize()}s</h2>
<table><tr><th>{"iter" if view.kind == "exit" else "gen"}</th><th>parent</th><th>val</th>
<th>test</th><th>Δ</th><th>verdict</th><th>tokens</th>{"<th>USD</th>" if spent else ""}
<th>strategy</th></tr>
{"".join(rows)}</table>
{extra}
{"".join(sections)}
<script type="application/json" id="run-data">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
