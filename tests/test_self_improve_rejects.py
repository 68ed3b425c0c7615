"""Self-improvement keeps what it rejects: every proposed improver's source, status, error
and scores are in the generation record and in its run folder, and `stop lineage`,
`stop show`, `stop view` and the HTML export say why a generation was reverted. Small
real runs with a scripted model: one round, two meta-utility tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from stop.defaults import LOCAL
from stop.records import (
    Budget,
    GenerationRecord,
    ModelSettings,
    SelfImproveConfig,
    SelfImproveResult,
)
from tests import improvers as I
from tests.helpers import run_stop, self_improve_run

# Its error carries an escape sequence (clear the screen): a terminal must never get it.
CRASHING = """```python
def improve_algorithm(initial_solution, utility, language_model):
    raise ZeroDivisionError("no luck \\x1b[2J")
```"""
# A colon missing, and a raw escape sequence (set the window title) in its source.
SYNTAX = """```python
# \x1b]0;owned\x07
def improve_algorithm(initial_solution, utility, language_model)
    return initial_solution
```"""
# Proposes two improvers, asks the utility for both (whatever the budget), and returns
# the first one unchanged, however it scored.
FIRST = """from stop.helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    message = f"Improve:\\n```python\\n{initial_solution}\\n```\\n{utility.str}"
    replies = language_model.batch_prompt("expert", [message] * 2, temperature=0.7)
    programs = extract_code(replies)
    for program in programs:
        try:
            utility(program)
        except Exception:
            pass
    return programs[0]
"""
TEST_BUDGET = Budget(model_calls=4, max_responses_per_call=2, max_tokens=256, evaluations=5)
LPN = [I.ZEROS_LPN, I.ZEROS_LPN]


def _config(tmp_path: Path, replies: list[str], **update) -> SelfImproveConfig:
    script = tmp_path / "script.json"
    script.write_text(I.script(replies, LPN))
    config = SelfImproveConfig(
        rounds=1,
        tests=2,
        model=ModelSettings(backend="scripted", script=script),
        round_budget=LOCAL.round,
        test_budget=TEST_BUDGET,
        runs_dir=tmp_path / "runs",
    )
    return config.model_copy(update=update)


def _stop(tmp_path: Path, *args: str):
    # Wide, so that no line of a table or the tree wraps under an assertion.
    where = ("--runs-dir", str(tmp_path / "runs"))
    return run_stop(*args, *where, cwd=tmp_path, env={"COLUMNS": "400"})


def _code(reply: str) -> str:
    """A reply's program as the seed improver passes it on (stripped, one newline)."""
    return reply.split("```python\n", 1)[1].rsplit("```", 1)[0].strip() + "\n"


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """The seed improver proposes a crashing improver and one with a syntax error."""
    tmp_path = tmp_path_factory.mktemp("rejects")
    store, generations = self_improve_run(_config(tmp_path, [CRASHING, SYNTAX]))
    return tmp_path, store, generations


def test_rejected_proposals_are_recorded_with_source_status_error_and_scores(crashed):
    _, store, (seed, gen) = crashed
    assert not gen.kept
    original, crash, syntax = gen.candidates
    assert original.origin == "original" and original.path == seed.path
    assert crash.status == "crash" and "ZeroDivisionError: no luck" in crash.error
    assert syntax.status == "syntax_error" and "expected ':'" in syntax.error
    for proposal, reply in ((crash, CRASHING), (syntax, SYNTAX)):
        assert proposal.val == 0.0 and proposal.test == 0.0
        assert proposal.path.startswith("generations/gen_001/")
        assert (store.dir / proposal.path).read_text() == _code(reply)
    assert gen.reason.startswith("every proposal failed: proposal 1 crashed: ")
    assert "ZeroDivisionError" in gen.reason and "proposal 2 has a syntax error" in gen.reason
    record = GenerationRecord.model_validate_json(
        (store.dir / "generations" / "gen_001.json").read_text()
    )
    assert record == gen  # what the loop returned is what was saved


def test_the_run_summary_table_says_why(crashed):
    from rich.console import Console

    from stop.view.self_improve import generations_summary

    tmp_path, store, generations = crashed
    result = SelfImproveResult(
        run_id=store.id,
        run_dir=str(store.dir),
        best_generation=0,
        best_path=str(store.dir / generations[0].path),
        circumvention_rate=0.0,
        generations=generations,
    )
    console = Console(width=300, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(
        generations_summary(
            result, SelfImproveConfig.model_validate_json((store.dir / "config.json").read_text())
        )
    )
    table = console.export_text()
    assert "every proposal failed: proposal 1 crashed:" in table
    assert "\x1b" not in table


def test_lineage_says_why_a_generation_was_reverted(crashed):
    tmp_path, store, _ = crashed
    result = _stop(tmp_path, "lineage", store.id)
    assert result.returncode == 0, result.stderr
    why = next(line for line in result.stdout.splitlines() if "reverted:" in line)
    assert "every proposal failed: proposal 1 crashed:" in why
    assert "ZeroDivisionError: no luck \\x1b[2J" in why  # shown, not obeyed
    assert "\x1b" not in result.stdout

    data = json.loads(_stop(tmp_path, "lineage", store.id, "--json").stdout)
    gen = data["generations"][1]
    assert gen["reason"].startswith("every proposal failed")
    assert [c["status"] for c in gen["candidates"]] == ["ok", "crash", "syntax_error"]
    assert gen["candidates"][2]["path"] == "generations/gen_001/proposal_002.py"


def test_show_lists_the_proposals_and_prints_a_rejected_ones_source(crashed):
    tmp_path, store, _ = crashed
    shown = _stop(tmp_path, "show", store.id, "1")
    assert shown.returncode == 0, shown.stderr
    assert "generation 1: reverted: every proposal failed" in shown.stdout
    rows = {
        int(m.group(1)): line
        for line in shown.stdout.splitlines()
        if (m := re.match(r"│\s+(\d+) │", line))
    }
    assert set(rows) == {0, 1, 2}
    assert "crash" in rows[1] and "ZeroDivisionError" in rows[1] and "proposal_001.py" in rows[1]
    assert "syntax_error" in rows[2] and "expected ':'" in rows[2]
    assert "0.000" in rows[2]
    assert "\x1b" not in shown.stdout

    source = _stop(tmp_path, "show", store.id, "1", "--proposal", "2")
    assert source.returncode == 0, source.stderr
    assert "proposal 2 (model): syntax_error, val 0.000, test 0.000" in source.stdout
    assert "error: line " in source.stdout and "expected ':'" in source.stdout
    assert "def improve_algorithm(initial_solution, utility, language_model)\n" in source.stdout
    assert "\\x1b]0;owned\\x07" in source.stdout and "\x1b" not in source.stdout
    diff = _stop(tmp_path, "show", store.id, "1", "--proposal", "1", "--diff")
    assert "+++ proposal 1" in diff.stdout and "+    raise ZeroDivisionError" in diff.stdout

    missing = _stop(tmp_path, "show", store.id, "1", "--proposal", "7")
    assert missing.returncode == 2 and "has no proposal 7 (it has 0..2)" in missing.stderr


def test_html_page_carries_the_reason_statuses_errors_and_sources(crashed):
    tmp_path, store, _ = crashed
    page = tmp_path / "page.html"
    result = _stop(tmp_path, "export", store.id, "--html", str(page))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    # The error's and the source's escape sequences are visible text on the page.
    assert "\x1b" not in text and "\\x1b]0;owned\\x07" in text
    assert "Reverted: every proposal failed: proposal 1 crashed:" in text
    assert "reverted: every proposal failed" in text  # the table of generations
    assert "<td>syntax_error</td>" in text and "expected &#x27;:&#x27;" in text
    assert "ZeroDivisionError: no luck" in text
    assert "proposal 2 (syntax_error) source (generations/gen_001/proposal_002.py)" in text
    # The rejected source is on the page, highlighted, so only as escaped text.
    plain = re.sub(r"<[^>]+>", "", text)
    assert "def improve_algorithm(initial_solution, utility, language_model)\n" in plain


def test_terminal_ui_shows_why_and_the_rejected_sources(crashed):
    from rich.console import Console

    from stop.view.app import LineageApp
    from stop.view.runs import open_run

    tmp_path, store, _ = crashed
    view = open_run(tmp_path / "runs", store.id)

    def text(app, widget: str) -> str:
        console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(app.query_one(f"#{widget}").content)
        return console.export_text()

    async def main() -> None:
        app = LineageApp(view)
        async with app.run_test(size=(200, 50)) as pilot:
            await pilot.pause()
            await pilot.press("down", "down")  # the run, generation 0, generation 1
            await pilot.pause()
            assert app.selected.gen == 1
            assert "reverted: every proposal failed: proposal 1 crashed" in text(app, "summary")
            await pilot.press("3")
            await pilot.pause()
            body = text(app, "body")
            assert "syntax_error" in body and "ZeroDivisionError: no luck" in body
            assert "proposal 2: syntax_error" in body
            assert "def improve_algorithm(initial_solution, utility, language_model)" in body
            await pilot.press("q")

    asyncio.run(main())


def test_an_improver_that_crashes_while_proposing_is_the_reason(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(_code(I.BROKEN))
    store, (_, gen) = self_improve_run(_config(tmp_path, [I.LAZY], improver=str(broken)))
    assert not gen.kept and gen.improver_status == "crash"
    assert gen.reason.startswith("the improver crashed: ")
    assert "RuntimeError: nothing works" in gen.reason
    shown = _stop(tmp_path, "show", store.id, "1")
    assert "improver: crash:" in shown.stdout and "RuntimeError: nothing works" in shown.stdout
    lineage = _stop(tmp_path, "lineage", store.id)
    assert "reverted: the improver crashed:" in lineage.stdout


def test_a_proposal_no_better_than_its_parent_is_named_with_its_score(tmp_path):
    _, (seed, gen) = self_improve_run(_config(tmp_path, [I.LAZY, CRASHING]))
    assert not gen.kept
    best = gen.candidates[1]
    assert best.status == "ok" and best.val <= seed.meta_utility_val
    assert gen.reason.startswith(
        f"no proposal beat its parent: the best, proposal 1, scored {best.val:.3f} ≤ "
        f"{seed.meta_utility_val:.3f} of generation 0"
    )
    assert "proposal 2 crashed" in gen.reason


def test_a_returned_proposal_that_fails_every_test_and_a_spent_budget(tmp_path):
    """The improver returns a crashing proposal, and asked for one evaluation more than
    the round's budget: the crashing one is the generation, with why, and the budget it
    asked past is in the record."""
    first = tmp_path / "first.py"
    first.write_text(FIRST)
    round_budget = LOCAL.round.model_copy(update={"evaluations": 1})
    config = _config(tmp_path, [CRASHING, SYNTAX], improver=str(first), round_budget=round_budget)
    store, (_, gen) = self_improve_run(config)
    assert not gen.kept
    assert (store.dir / gen.path).read_text().strip() == _code(CRASHING).strip()
    assert gen.candidates[0].status == "crash" and gen.candidates[0].path == gen.path
    assert gen.reason.startswith("proposal 0 failed every meta-utility test: it crashed: ")
    assert any("past its budget of 1" in f for f in gen.improver_findings)
    shown = _stop(tmp_path, "show", store.id, "1")
    assert "improver: asked the utility past its budget" in shown.stdout
