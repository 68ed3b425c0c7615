"""Scores nobody can forge, and untrusted text that reaches the screen inert: the
forgeries of the hostile corpus through the real `stop improve` command line, and what
its table, `stop lineage`, `stop show`, the viewer's panes and the HTML export print of a
candidate whose crash message is terminal control codes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from stop.view import app, render
from stop.view.runs import read_run
from tests.helpers import FIB, run_stop
from tests.hostile.corpus import CANDIDATES

FORGERIES = [c for c in CANDIDATES if c.no_faster]
CONTROL = next(c for c in CANDIDATES if c.name == "control_sequence_crash_message")
# What the candidate's message would do to a terminal, and what it must look like instead.
RAW = ("\x1b[2J", "\x1b]0;pwned", "\x9b31m")
SHOWN = "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x9b31m owned"


def _reply(source: str) -> str:
    return f"Here it is.\n```python\n{source}```\n"


def test_no_forgery_is_chosen_or_scores_above_the_program_it_wraps(tmp_path, script):
    replies = script([_reply(c.source) for c in FORGERIES])
    proc = run_stop(
        *("improve", "--target", str(FIB), "--script", str(replies), "--json"),
        *("--runs-dir", str(tmp_path / "runs"), "--budget", str(len(FORGERIES) + 1)),
        *("--samples", str(len(FORGERIES))),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert not result["improved"], result
    assert Path(result["best_path"]).read_text() == FIB.read_text()
    scored = [c for c in result["candidates"] if c["origin"] == "model"]
    assert len(scored) == len(FORGERIES)
    for candidate in scored:
        assert candidate["evaluation"]["status"] == "ok", candidate
        assert candidate["evaluation"]["score"] < 1.5, candidate


def _run_with_the_control_sequence(tmp_path: Path, script) -> tuple[str, Path]:
    replies = script([_reply(CONTROL.source)])
    runs = tmp_path / "runs"
    proc = run_stop(
        *("improve", "--target", str(FIB), "--script", str(replies), "--runs-dir", str(runs)),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return proc.stdout, run


def _assert_inert(text: str) -> None:
    for raw in RAW:
        assert raw not in text, repr(text)
    assert "\\x1b[2J" in text, text  # shown, as visible text


def test_a_control_sequence_message_is_shown_as_harmless_text(tmp_path, script):
    table, run = _run_with_the_control_sequence(tmp_path, script)
    # Not a terminal: rich writes no escape of its own, so any at all would be the
    # candidate's.
    assert "\x1b" not in table and "\x9b" not in table
    assert "\\x1b[2J" in table  # the table's cell, cut to its 60 characters
    for args in (["lineage", run.name], ["show", run.name, "1"]):
        proc = run_stop(*args, "--runs-dir", str(run.parent), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout and "\x9b" not in proc.stdout
    # The viewer's panes, on a terminal with colours: its own escapes only.
    view = read_run(run)
    node = next(n for n in view.nodes if n.error)
    console = Console(file=io.StringIO(), force_terminal=True, width=300)
    console.print(app.LineageApp._summary(SimpleNamespace(view=view), node))
    console.print(app.candidates(view, node))
    console.print(render.lineage(view))
    _assert_inert(console.file.getvalue())
    # --json keeps the raw text, escaped as JSON.
    proc = run_stop("lineage", run.name, "--json", "--runs-dir", str(run.parent), cwd=tmp_path)
    errors = [n.get("error") or "" for n in json.loads(proc.stdout)["generations"]]
    assert any("\x1b[2J" in e for e in errors)


def test_the_html_export_escapes_it(tmp_path, script):
    _, run = _run_with_the_control_sequence(tmp_path, script)
    page = tmp_path / "run.html"
    proc = run_stop(
        "export", run.name, "--html", str(page), "--runs-dir", str(run.parent), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "\x1b" not in text and "\x9b" not in text
    assert "pwned" in text  # the data is there, escaped
