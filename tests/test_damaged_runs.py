"""Damaged run folders are contained (issue #19): `stop runs` skips one with a line on
stderr and lists the rest; `stop lineage`, `show`, `export` and `view` on it are bad
input, one line naming the file and what is wrong, exit code 2. And the run listings
read at 80 and 120 columns and piped.

Real runs of each kind are made once (an improve run by its loop with a scripted model,
a self-improve and an expert-iteration run through the run store), copied for each test
and damaged there. The commands run in this process through the CLI's own entry point
(a traceback would fail the test), and once in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stop.records import Finished, ImproveConfig, IterationSaved, ModelSettings
from stop.store import DamagedRun, RunStore, read_events
from stop.view.runs import open_run
from tests import replies as R
from tests.helpers import FIB, improve_run, run_stop
from tests.run_fixture import make_run

KINDS = ("improve", "self-improve", "exit")
PROPOSAL = "generations/gen_001/proposal_001.py"  # the self-improve run's kept proposal


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A runs folder with one healthy run of each kind, never damaged."""
    from stop.defaults import LOCAL
    from stop.exit.config import make_config
    from stop.exit.folder import create
    from stop.llm.scripted import ScriptedBackend

    runs_dir = tmp_path_factory.mktemp("damaged") / "runs"
    config = ImproveConfig(
        target=FIB,
        model=ModelSettings(backend="scripted", script=runs_dir.parent / "unused.json"),
        runs_dir=runs_dir,
        budget=LOCAL.improve,
    )
    result = improve_run(config, backend=ScriptedBackend([R.MEMO, R.WRONG]))
    assert result.improved  # so that a reader compares best.py with the candidates
    store = make_run(runs_dir, 3)
    # Generation 1's proposal kept its source, as self-improvement keeps them now.
    record = json.loads((store.dir / "generations/gen_001.json").read_text())
    record["candidates"][0]["path"] = PROPOSAL
    (store.dir / "generations/gen_001.json").write_text(json.dumps(record))
    (store.dir / PROPOSAL).parent.mkdir()
    (store.dir / PROPOSAL).write_text((store.dir / "generations/gen_001.py").read_text())
    exit_store = create(make_config(preset="tiny", max_n=3, iterations=2), runs_dir)
    exit_store.emit(IterationSaved(iteration=1, solve_rates={"add-2": 1.0, "add-3": 0.0}))
    exit_store.emit(IterationSaved(iteration=2, solve_rates={"add-2": 1.0, "add-3": 1.0}))
    exit_store.emit(Finished(generations=2))
    assert sorted(_kinds(runs_dir)) == sorted(KINDS)
    return runs_dir


def _kinds(runs_dir: Path) -> dict[str, Path]:
    """kind -> its run's folder (the run store names a run by its kind)."""
    runs = (p for p in runs_dir.iterdir() if not p.name.startswith("."))  # .cache: replies
    return {re.fullmatch(r"\d{8}-\d{6}-(.+)-\w{6}", p.name).group(1): p for p in runs}


@pytest.fixture
def runs(pristine, tmp_path) -> Path:
    runs_dir = tmp_path / "runs"
    shutil.copytree(pristine, runs_dir)
    return runs_dir


def _stop(capsys, *args: str) -> tuple[int, str, str]:
    """The `stop` command line, run here: (exit code, stdout, stderr)."""
    from stop.cli import main

    argv = sys.argv
    sys.argv = ["stop", *args]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return int(code or 0), out.out, out.err


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- ways to damage a run -------------------------------------------------------------

Damage = Callable[[Path], None]


def _missing(name: str) -> Damage:
    return lambda run: (run / name).unlink()


def _folder(name: str) -> Damage:
    """A file that cannot be read (as root, too: chmod does not stop root)."""

    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return damage


def _truncated(name: str) -> Damage:
    def damage(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: len(data) // 2])

    return damage


def _garbage(name: str) -> Damage:
    return lambda run: (run / name).write_bytes(b"\x00\xff\xfe\x80 not text \xc3")


def _edited(name: str, change: Callable[[dict], None]) -> Damage:
    def damage(run: Path) -> None:
        data = json.loads((run / name).read_text())
        change(data)
        (run / name).write_text(json.dumps(data))

    return damage


def _other_format(name: str) -> Damage:
    return _edited(name, lambda data: data.update(format_version=0))


def _generations_a_file(run: Path) -> None:
    shutil.rmtree(run / "generations")
    (run / "generations").write_text("not a folder")


def _unreadable(run: Path) -> None:
    run.chmod(0)


ROOT = os.geteuid() == 0
# (kind of run, damage, what the one line must say)
DAMAGE = {
    "best.py missing": ("improve", _missing("best.py"), "best.py is missing"),
    "best.py unreadable": ("improve", _folder("best.py"), "cannot read best.py (Is a directory)"),
    "candidate source missing": (
        "improve",
        _missing("candidates/001.py"),
        "001.py in candidates/ is missing",
    ),
    "candidate record truncated": (
        "improve",
        _truncated("candidates/001.json"),
        "cannot read 001.json in candidates/: not JSON",
    ),
    "result.json truncated": (
        "improve",
        _truncated("result.json"),
        "cannot read result.json: not JSON",
    ),
    "result.json invalid": (
        "improve",
        _edited("result.json", lambda data: data.pop("best_path")),
        "corrupt result result.json: best_path",
    ),
    "config.json binary garbage": (
        "improve",
        _garbage("config.json"),
        "cannot read config.json: not UTF-8 text",
    ),
    "config.json truncated": (
        "self-improve",
        _truncated("config.json"),
        "cannot read config.json: not JSON",
    ),
    "config.json of another format": (
        "self-improve",
        _other_format("config.json"),
        "config.json was written in run format 0",
    ),
    "generation record truncated": (
        "self-improve",
        _truncated("generations/gen_001.json"),
        "cannot read gen_001.json in generations/",
    ),
    "generation record of another format": (
        "self-improve",
        _other_format("generations/gen_001.json"),
        "gen_001.json in generations/ was written in run format 0",
    ),
    "generation source missing": (
        "self-improve",
        _missing("generations/gen_001.py"),
        "gen_001.py in generations/ is missing",
    ),
    "proposal source missing": (
        "self-improve",
        _missing(PROPOSAL),
        "proposal_001.py in generations/gen_001/ is missing",
    ),
    "events.jsonl unreadable": (
        "self-improve",
        _folder("events.jsonl"),
        "cannot read events.jsonl (Is a directory)",
    ),
    "generations not a folder": (
        "self-improve",
        _generations_a_file,
        "cannot read generations/",
    ),
    "config.json missing": ("exit", _missing("config.json"), "no config.json"),
    "config.json unreadable": (
        "exit",
        _folder("config.json"),
        "cannot read config.json (Is a directory)",
    ),
    "config.json invalid": (
        "exit",
        _edited("config.json", lambda data: data.update(iterations="many")),
        "corrupt config.json: iterations",
    ),
    "run folder unreadable": ("exit", _unreadable, "Permission denied"),
}
CASES = [
    pytest.param(
        name,
        id=name,
        marks=[pytest.mark.skipif(ROOT, reason="root reads what chmod 000 forbids")]
        if name == "run folder unreadable"
        else [],
    )
    for name in DAMAGE
]


@pytest.fixture
def damaged(request, runs):
    """(runs folder, the damaged run, what its line must say); the rest stay healthy."""
    kind, damage, words = DAMAGE[request.param]
    run = _kinds(runs)[kind]
    damage(run)
    yield runs, run, words
    run.chmod(0o755)


@pytest.mark.parametrize("damaged", CASES, indirect=True)
def test_runs_skips_a_damaged_run_in_one_line_and_lists_the_rest(damaged, capsys):
    runs, run, words = damaged
    healthy = sorted(p.name for p in _kinds(runs).values() if p != run)
    code, out, err = _stop(capsys, "runs", "--json", "--runs-dir", str(runs))
    assert code == 0, err
    assert [row["run_id"] for row in json.loads(out)] == healthy
    (line,) = _lines(err)
    assert line.startswith(f"warning: skipping {run.name}: ") and words in line, line
    code, out, err = _stop(capsys, "runs", "--runs-dir", str(runs))  # the table, too
    assert code == 0 and all(name in out for name in healthy) and run.name not in out
    assert len(_lines(err)) == 1


@pytest.mark.parametrize("damaged", CASES, indirect=True)
def test_reading_a_damaged_run_is_one_line_of_bad_input(damaged, capsys, tmp_path):
    runs, run, words = damaged
    page = tmp_path / "page.html"
    for args in (
        ["lineage", run.name],
        ["lineage", run.name, "--json"],
        ["show", run.name, "1"],
        ["export", run.name, "--html", str(page)],
        ["view", run.name],
    ):
        code, out, err = _stop(capsys, *args, "--runs-dir", str(runs))
        assert code == 2, (args, out, err)
        (line,) = _lines(err)
        assert line.startswith(f"error: run {run.name}: ") and words in line, (args, line)
        assert out == ""
    assert not page.exists()


def test_a_program_that_is_not_text_is_bad_input_where_it_is_read(runs, capsys, tmp_path):
    run = _kinds(runs)["self-improve"]
    _garbage("generations/gen_001.py")(run)
    # `stop runs` does not read programs: the run is listed.
    code, out, err = _stop(capsys, "runs", "--json", "--runs-dir", str(runs))
    assert code == 0 and run.name in out and err == ""
    words = "cannot read gen_001.py in generations/: not UTF-8 text"
    for args in (
        ["lineage", run.name],
        ["show", run.name, "1"],
        ["export", run.name, "--html", str(tmp_path / "page.html")],
        ["view", run.name],
    ):
        code, out, err = _stop(capsys, *args, "--runs-dir", str(runs))
        assert code == 2, (args, err)
        (line,) = _lines(err)
        assert words in line, (args, line)


@pytest.mark.parametrize("kind", ["self-improve", "exit"])
def test_a_broken_event_line_is_a_warning_and_the_rest_of_the_log_counts(runs, capsys, kind):
    run = _kinds(runs)[kind]
    log = (run / "events.jsonl").read_bytes().splitlines(keepends=True)
    log.insert(1, b'{"event": "iteration", "iter\x00\xff\n')  # before the `finished`
    (run / "events.jsonl").write_bytes(b"".join(log))
    code, out, err = _stop(capsys, "runs", "--json", "--runs-dir", str(runs))
    assert code == 0
    row = next(r for r in json.loads(out) if r["run_id"] == run.name)
    assert row["status"] == "finished"
    (line,) = _lines(err)
    assert line == f"warning: {run.name}: events.jsonl: line 2 is not an event (skipped)"
    code, out, err = _stop(capsys, "lineage", run.name, "--runs-dir", str(runs))
    assert code == 0 and "events.jsonl: line 2 is not an event (skipped)" in out


def test_an_event_after_a_line_cut_short_is_on_a_line_of_its_own(tmp_path):
    store = make_run(tmp_path / "runs", 2, finished=False)
    with open(store.dir / "events.jsonl", "ab") as log:
        log.write(b'{"event": "generation", "gen": 2, "va')  # killed while writing it
    RunStore.resume(tmp_path / "runs", store.id).emit(Finished(generations=2))
    assert [e.event for e in read_events(store.dir)][-2:] == ["resumed", "finished"]
    assert open_run(tmp_path / "runs", store.id).status == "finished"


def test_a_damaged_exchange_log_leaves_out_its_bad_lines(runs):
    run = _kinds(runs)["self-improve"]
    with open(run / "llm.jsonl", "ab") as log:
        log.write(b"\xff\xfe garbage\n5\n")
    view = open_run(runs, run.name)
    assert len(view.exchanges()) == 3  # one per generation of the fixture
    _folder("llm.jsonl")(run)
    with pytest.raises(DamagedRun, match="cannot read llm.jsonl \\(Is a directory\\)"):
        view.exchanges()


def test_damage_is_one_line_through_the_real_command_line(runs, tmp_path):
    run = _kinds(runs)["improve"]
    (run / "best.py").unlink()
    listed = run_stop("runs", "--runs-dir", str(runs), cwd=tmp_path, env={"COLUMNS": "80"})
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.strip() == f"warning: skipping {run.name}: best.py is missing"
    shown = run_stop("lineage", run.name, "--runs-dir", str(runs), cwd=tmp_path)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    assert shown.stderr.strip() == f"error: run {run.name}: best.py is missing"


# --- 80 columns, 120, and pipes ---------------------------------------------------------

HEADERS = ("id", "date", "kind", "model", "rounds", "best", "status")


def _table(out: str) -> tuple[list[str], list[str]]:
    """(the header row's words, the rows) of `stop runs`' table."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("id "))
    return lines[head].split(), [line for line in lines[head + 2 :] if line.strip()]


@pytest.mark.parametrize("columns", ["80", "120", None])
def test_the_runs_table_reads_at_80_and_120_columns_and_piped(
    pristine, capsys, monkeypatch, columns
):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)  # piped: stdout is no terminal here
    else:
        monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = _stop(capsys, "runs", "--runs-dir", str(pristine))
    assert code == 0
    headers, rows = _table(out)
    ids = sorted(p.name for p in _kinds(pristine).values())
    # Every run on one line, its id whole; every header a whole word, none cut.
    assert len(rows) == len(ids)
    assert [row.split()[0] for row in rows] == ids
    assert set(headers) <= set(HEADERS) and {"id", "best", "status"} <= set(headers)
    assert "…" not in "".join(headers)
    if columns is not None:
        assert max(len(line) for line in out.splitlines()) <= int(columns)
    if columns != "80":
        assert headers == list(HEADERS)
    else:
        assert "model" in headers  # the date and the kind are in the ids
    assert all("finished" in row for row in rows)


@pytest.mark.parametrize("columns", ["80", "120", None])
def test_lineage_and_show_keep_a_line_a_generation_and_paths_whole(
    pristine, capsys, monkeypatch, columns
):
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    run = _kinds(pristine)["self-improve"]
    code, out, _ = _stop(capsys, "lineage", run.name, "--runs-dir", str(pristine))
    assert code == 0
    # The title, a line per generation (2, reverted, hangs under 1), the chart.
    lines = out.splitlines()
    assert len(lines) == 1 + 3 + 1, out
    assert len([line for line in lines if re.search(r"gen \d  val", line)]) == 3
    code, out, _ = _stop(capsys, "show", run.name, "1", "--runs-dir", str(pristine))
    assert code == 0
    assert f"stop show {run.name} 1 --proposal N" in out  # the command on one line
    assert "generations/gen…" not in out and "proposal_0…" not in out
    if columns != "80":
        assert PROPOSAL in out


def test_the_terminal_ui_says_what_it_cannot_read_and_goes_on(runs):
    import asyncio

    from rich.console import Console

    from stop.view.app import LineageApp

    run = _kinds(runs)["self-improve"]
    view = open_run(runs, run.name)
    view.read_sources()  # as `stop view` does before it draws

    def shown(app) -> str:
        console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        console.print(app.query_one("#body").content)
        return console.export_text()

    async def main() -> None:
        app = LineageApp(view)
        async with app.run_test(size=(160, 45)) as pilot:
            await pilot.pause()
            _folder("llm.jsonl")(run)  # the log goes bad while the UI is open
            await pilot.press("4")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "cannot read llm.jsonl (Is a directory)" in shown(app)
            _truncated("generations/gen_001.json")(run)
            await pilot.press("r")  # a re-read that fails keeps the run on the screen
            await pilot.pause()
            assert app.view is view and app.is_running
            await pilot.press("1")
            await pilot.pause()
            assert "Improves a solution" in shown(app)
            await pilot.press("q")

    asyncio.run(main())


def test_a_damaged_response_cache_is_bad_input_before_anything_is_written(tmp_path):
    """Not set aside as a damaged evaluation cache is: a run without it would pay again
    for every reply it holds. One line, exit 2, no run folder; --no-cache still runs."""
    runs = tmp_path / "runs"
    (runs / ".cache").mkdir(parents=True)
    (runs / ".cache" / "responses.sqlite3").write_bytes(b"not a database " * 100)
    script = tmp_path / "script.json"
    script.write_text(json.dumps([R.MEMO]))
    args = ("improve", "--target", str(FIB), "--backend", "scripted", "--script", str(script))
    failed = run_stop(*args, "--runs-dir", str(runs), cwd=tmp_path)
    assert failed.returncode == 2, failed.stderr
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("error: the response cache ") and "--no-cache" in line
    assert sorted(p.name for p in runs.iterdir()) == [".cache"]
    ran = run_stop(*args, "--runs-dir", str(runs), "--no-cache", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
