"""The lineage viewer: `stop runs`, `stop lineage`, `stop show`, `stop view` (through
Textual's pilot) and `stop export --html` (opened in headless Chromium), on fixture runs
written through the real run store, on real runs made by `stop self-improve` and
`stop improve` with a scripted model, and on expert-iteration runs (a real one is made in
tests/test_exit_train.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from stop.defaults import LOCAL
from stop.errors import BadInput
from stop.records import (
    FORMAT_VERSION,
    Budget,
    Failed,
    IterationSaved,
    ModelSettings,
    Resumed,
    SelfImproveConfig,
)
from stop.view.runs import open_run, read_run, summarize
from tests import improvers as I
from tests import replies as R
from tests.helpers import FIB, run_stop, self_improve_run
from tests.run_fixture import CIRCUMVENTING, make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    runs_dir = tmp_path_factory.mktemp("view") / "runs"
    make_run(runs_dir, 50)
    return runs_dir


def _only(runs_dir: Path) -> str:
    (run_id,) = [p.name for p in runs_dir.iterdir() if not p.name.startswith(".")]
    return run_id


def _bad(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr


def test_runs_lists_every_run_with_its_state(runs, tmp_path):
    running = make_run(tmp_path / "runs", 4, finished=False)
    shutil.copytree(running.dir, runs.parent / "extra" / running.id)
    result = run_stop("runs", "--json", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["run_id"] == running.id and row["status"] == "running"
    assert row["kind"] == "self-improve" and row["generations"] == 4
    result = run_stop("runs", "--runs-dir", str(runs), cwd=tmp_path, env={"COLUMNS": "150"})
    assert result.returncode == 0, result.stderr
    assert _only(runs) in result.stdout and "finished" in result.stdout
    assert "0.790" in result.stdout  # the best kept generation (49)


def test_lineage_tree_marks_kept_reverted_and_the_circumventing_generation(runs, tmp_path):
    run_id = _only(runs)
    result = run_stop(
        "lineage", run_id, "--runs-dir", str(runs), cwd=tmp_path, env={"COLUMNS": "200"}
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    line = {int(m.group(1)): text for text in lines if (m := re.search(r"gen (\d+) ", text))}
    assert set(line) == set(range(50))
    assert "reverted" in line[2] and "Δ -0.050" in line[2]
    assert "kept" in line[1] and "Δ +0.010" in line[1]
    assert "tried to switch the sandbox off" in line[CIRCUMVENTING]
    assert "tried to switch" not in line[4]
    assert "simulated annealing" in line[1]  # the strategy, from the improver's docstring
    assert any("▁" in text and "█" in text for text in lines)  # the utility sparkline
    # A reverted generation hangs under the one it was proposed from; kept ones do not
    # indent: the tree stays readable at fifty generations.
    assert line[2].index("gen 2") > line[1].index("gen 1") == line[3].index("gen 3")

    data = json.loads(
        run_stop("lineage", run_id, "--json", "--runs-dir", str(runs), cwd=tmp_path).stdout
    )
    gens = {g["gen"]: g for g in data["generations"]}
    assert gens[CIRCUMVENTING]["circumvented"] and not gens[4]["circumvented"]
    assert gens[2]["delta"] == pytest.approx(-0.05) and not gens[2]["kept"]


def test_show_prints_source_and_diff_against_the_parent(runs, tmp_path):
    run_id = _only(runs)
    source = run_stop("show", run_id, str(CIRCUMVENTING), "--runs-dir", str(runs), cwd=tmp_path)
    assert source.returncode == 0, source.stderr
    assert "utility.use_sandbox = False" in source.stdout
    diff = run_stop("show", run_id, "3", "--diff", "--runs-dir", str(runs), cwd=tmp_path)
    assert diff.returncode == 0, diff.stderr
    assert "--- generation 1" in diff.stdout and "+++ generation 3" in diff.stdout  # 2 reverted
    assert re.search(r"^\+\s+utility\.use_sandbox = False", diff.stdout, re.M)


def test_bad_input_is_one_line_and_exit_code_2(runs, tmp_path):
    run_id = _only(runs)
    _bad(
        run_stop("lineage", run_id[:-1] + "x", "--runs-dir", str(runs), cwd=tmp_path),
        "no run",
        f"did you mean {run_id}",
    )
    _bad(
        run_stop("show", run_id, "50", "--runs-dir", str(runs), cwd=tmp_path),
        "has no generation 50",
        "0..49",
    )
    _bad(run_stop("show", run_id, "two", "--runs-dir", str(runs), cwd=tmp_path), "number")
    _bad(run_stop("view", "nope", "--runs-dir", str(runs), cwd=tmp_path), "no run")
    out = tmp_path / "missing" / "out.html"
    _bad(
        run_stop("export", run_id, "--html", str(out), "--runs-dir", str(runs), cwd=tmp_path),
        "does not exist",
    )
    assert not out.parent.exists()


def test_older_corrupt_and_incomplete_runs_are_reported(tmp_path):
    runs_dir = tmp_path / "runs"
    old = make_run(runs_dir, 3)
    config = json.loads((old.dir / "config.json").read_text())
    (old.dir / "config.json").write_text(json.dumps(config | {"format_version": 0}))
    _bad(
        run_stop("lineage", old.id, "--runs-dir", str(runs_dir), cwd=tmp_path),
        "run format 0",
        f"reads format {FORMAT_VERSION}",
    )

    gap = make_run(runs_dir, 4)
    (gap.dir / "generations" / "gen_001.json").unlink()
    _bad(
        run_stop("lineage", gap.id, "--runs-dir", str(runs_dir), cwd=tmp_path),
        "missing generation 1",
    )

    corrupt = make_run(runs_dir, 2)
    (corrupt.dir / "generations" / "gen_001.json").write_text("{not json")
    _bad(
        run_stop("show", corrupt.id, "1", "--runs-dir", str(runs_dir), cwd=tmp_path),
        "cannot read gen_001.json",
    )

    stray = runs_dir / "notes"
    stray.mkdir()
    _bad(run_stop("lineage", "notes", "--runs-dir", str(runs_dir), cwd=tmp_path), "not a stop run")
    # `stop runs` still lists what it can read, and says what it skipped.
    good = make_run(runs_dir, 2)
    listed = run_stop("runs", "--json", "--runs-dir", str(runs_dir), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [good.id]
    for skipped in (old.id, gap.id, corrupt.id, "notes"):
        assert f"skipping {skipped}" in listed.stderr


def test_summaries_name_the_strategy():
    assert (
        summarize('def improve_algorithm(a, u, m):\n    """Beam of 4."""\n', None) == "Beam of 4."
    )
    code = "def improve_algorithm(a, u, m):\n    temperature = 0.9\n    return a\n"
    assert summarize(code, None) == "varies temperature"
    assert summarize(code, code) == "same as its parent"
    assert summarize("def broken(:", None) == "does not parse"


def _pilot(view, steps):
    """Drive the UI with keys only; `steps` is a coroutine function given (app, pilot)."""
    from stop.view.app import LineageApp

    async def main():
        app = LineageApp(view)
        async with app.run_test(size=(160, 45)) as pilot:
            await pilot.pause()
            await steps(app, pilot)

    asyncio.run(main())


def _text(app, widget: str = "body") -> str:
    from rich.console import Console

    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(app.query_one(f"#{widget}").content)
    return console.export_text()


async def _settle(app, pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()


def test_terminal_ui_reaches_every_view_from_the_keyboard(runs):
    view = open_run(runs, _only(runs))

    async def steps(app, pilot):
        assert app.selected.gen == 0 and app.tab == "code"
        assert "Improves a solution" in _text(app)
        for _ in range(CIRCUMVENTING + 1):  # the tree's first row is the run itself
            await pilot.press("down")
        await pilot.pause()
        assert app.selected.gen == CIRCUMVENTING
        assert "tried to switch the sandbox off" in _text(app, "summary")
        await pilot.press("2")
        await pilot.pause()
        assert app.tab == "diff"
        assert "+    utility.use_sandbox = False" in _text(app)
        await pilot.press("3")
        await pilot.pause()
        assert "sandbox-off attempt" in _text(app) and "Meta-utility tests" in _text(app)
        await pilot.press("4")
        await _settle(app, pilot)
        assert "improver" in _text(app) and "improve generation 1" in _text(app)
        await pilot.press("5")
        await _settle(app, pilot)
        assert "meta-utility per generation" in _text(app)
        await pilot.press("b")
        await _settle(app, pilot)
        assert app.selected.gen == 49
        await pilot.press("1")
        await pilot.pause()
        assert "Generation 49" in _text(app)
        await pilot.press("q")

    _pilot(view, steps)


def test_terminal_ui_follows_a_run_in_progress(tmp_path):
    store = make_run(tmp_path / "runs", 3, finished=False)
    view = open_run(tmp_path / "runs", store.id)
    assert view.status == "running" and view.in_progress == 3

    async def steps(app, pilot):
        tree = app.query_one("Tree")
        assert "in progress" in str(tree.root.children[-1].label)
        # The run goes on: its next generation appears on reload.
        more = make_run(tmp_path / "more", 5)
        for name in ("gen_003.json", "gen_003.py", "gen_004.json", "gen_004.py"):
            shutil.copy(more.dir / "generations" / name, store.dir / "generations" / name)
        await pilot.press("r")
        await pilot.pause()
        gens = [n.gen for n in app.view.nodes]
        assert gens == [0, 1, 2, 3, 4]
        labels = " ".join(str(node.label) for node in _walk(tree.root))
        assert "gen 4" in labels

    _pilot(view, steps)


def _walk(node):
    for child in node.children:
        yield child
        yield from _walk(child)


def _chromium_dom(page: Path, tmp_path: Path) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/setup installs it)")
        pytest.skip("chromium is not installed (scripts/setup installs it as root)")
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_html_export_draws_the_lineage_in_a_browser(runs, tmp_path):
    # A hostile improver's docstring tries to inject a script into the page.
    runs_dir = tmp_path / "runs"
    shutil.copytree(runs, runs_dir)
    run_id = _only(runs_dir)
    gen_5 = runs_dir / run_id / "generations" / "gen_005.py"
    gen_5.write_text(
        gen_5.read_text().replace(
            "Generation 5:", "</script><script>document.title='owned'</script><b>x</b>"
        )
    )
    page = tmp_path / "lineage.html"
    result = run_stop(
        "export", run_id, "--html", str(page), "--runs-dir", str(runs_dir), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "http://" not in page.read_text().replace("http://www.w3.org", "")  # self-contained
    dom = _chromium_dom(page, tmp_path)
    # The page's script drew one node per generation, an edge per parent, and the chart.
    nodes = re.findall(r'<a [^>]*class="node (\w+)"[^>]*data-gen="(\d+)"', dom)
    assert sorted(int(gen) for _, gen in nodes) == list(range(50))
    classes = dict((int(gen), cls) for cls, gen in nodes)
    assert classes[CIRCUMVENTING] == "circumvented"
    assert classes[2] == "reverted" and classes[4] == "kept"
    assert len(re.findall(r'class="edge"', dom)) == 49
    assert len(re.findall(r'<polyline[^>]*class="series"', dom)) == 2  # val and test
    assert "owned" not in re.search(r"<title>(.*?)</title>", dom).group(1)
    assert len(re.findall(r"<script", dom)) == 2  # the data and the page's own script


def test_real_self_improve_run_is_viewable_with_its_exchanges(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(I.script([I.STRONGER, I.LAZY], [I.ZEROS_LPN, I.ZEROS_LPN, I.GOOD_LPN]))
    config = SelfImproveConfig(
        rounds=1,
        tests=2,
        model=ModelSettings(backend="scripted", script=script),
        round_budget=LOCAL.round,
        test_budget=Budget(model_calls=4, max_responses_per_call=2, max_tokens=256, evaluations=5),
        runs_dir=tmp_path / "runs",
    )
    store, generations = self_improve_run(config)
    view = open_run(tmp_path / "runs", store.id)
    assert [n.gen for n in view.nodes] == [0, 1] and view.status == "finished"
    assert view.nodes[1].kept == generations[1].kept
    # Each round's exchanges are tagged with the generation it made and who asked.
    roles = {e["role"] for e in view.exchanges(1)}
    assert roles == {"improver", "meta-test"}
    assert {e["role"] for e in view.exchanges(0)} == {"meta-test"}
    assert any("def meta_utility" in e["user"] for e in view.exchanges(1))
    result = run_stop(
        "lineage",
        store.id,
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
        env={"COLUMNS": "200"},
    )
    assert result.returncode == 0 and "gen 1" in result.stdout


def test_improve_run_shows_the_original_and_its_candidates(tmp_path, script):
    path = script([R.MEMO, R.WRONG, R.SYNTAX, R.PROSE])
    result = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--utility",
        "speed",
        "--backend",
        "scripted",
        "--script",
        str(path),
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    view = open_run(tmp_path / "runs", run_id)
    assert view.kind == "improve" and view.status == "finished"
    (root,) = [n for n in view.nodes if n.parent is None]
    (chosen,) = [n for n in view.nodes if n.kept]
    assert view.strategy(root) == "the original" and chosen.parent == root.gen
    assert "lru_cache" in view.source(chosen) or "memo" in view.source(chosen).lower()
    statuses = {n.status for n in view.nodes}
    assert {"ok", "wrong_answer", "syntax_error"} <= statuses
    shown = run_stop("show", run_id, str(chosen.gen), "--diff", cwd=tmp_path)
    assert shown.returncode == 0 and "+++ candidate" in shown.stdout
    with pytest.raises(BadInput, match="no generation 99"):
        view.node(99)


# --- expert-iteration runs ----------------------------------------------------------

# Greedy solve rates per iteration: add-3 is solved at 2, then lost again at 3.
EXIT_RATES = [
    {"add-2": 1.0, "add-3": 0.0},
    {"add-2": 1.0, "add-3": 1.0},
    {"add-2": 1.0, "add-3": 0.5},
]


def _exit_run(runs_dir: Path, iterations: int = 5):
    """An expert-iteration run folder as `stop exit train` writes one (no torch needed:
    the viewer reads the config and the events, not the checkpoint), interrupted after
    its first iteration and resumed."""
    from stop.exit.config import make_config
    from stop.exit.folder import create

    config = make_config(preset="tiny", max_n=3, iterations=iterations)
    store = create(config, runs_dir)
    store.emit(IterationSaved(iteration=1, solve_rates=EXIT_RATES[0]))
    store.emit(Failed(error="KeyboardInterrupt: "))
    store.emit(Resumed())
    for number, rates in enumerate(EXIT_RATES[1:], start=2):
        store.emit(IterationSaved(iteration=number, solve_rates=rates))
    return store


def test_exit_run_is_one_line_of_iterations(tmp_path):
    store = _exit_run(tmp_path / "runs")
    view = read_run(store.dir)
    assert view.kind == "exit" and view.status == "running" and view.rounds == 5
    assert view.in_progress == 4  # resumed, 3 of 5 iterations done
    assert [(n.gen, n.parent) for n in view.nodes] == [(1, None), (2, 1), (3, 2)]
    assert all(n.kept for n in view.nodes)
    assert [n.val for n in view.nodes] == [pytest.approx(sum(r.values()) / 2) for r in EXIT_RATES]
    assert view.best.gen == 3 and view.model == "decoder (tiny)"
    first, second, third = view.nodes
    assert view.strategy(second) == "2/2 solved, new: add-3"
    assert view.strategy(third) == "1/2 solved, lost: add-3"
    assert view.delta(third) == pytest.approx(-0.25)
    # An iteration has no program: its "source" is its solve rates, a task a line.
    text = view.source(third)
    assert "iteration 3: 1 of 2 tasks solved" in text and re.search(r"add-3\s+0\.500", text)
    assert "-add-3  1.000  solved" in view.diff(third) and "+add-3  0.500" in view.diff(third)
    with pytest.raises(BadInput, match="no iteration 9 \\(it has 1..3\\)"):
        view.node(9)
    (store.dir / "config.json").write_text(
        (store.dir / "config.json")
        .read_text()
        .replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 1')
    )
    with pytest.raises(
        BadInput, match=f"run format 1, and this stop reads format {FORMAT_VERSION}"
    ):
        read_run(store.dir)


def test_exit_run_in_runs_lineage_show_view_and_export(tmp_path):
    runs_dir = tmp_path / "runs"
    store = _exit_run(runs_dir, iterations=3)
    store.emit(Failed(error="RuntimeError: out of memory"))
    where = ["--runs-dir", str(runs_dir)]
    (row,) = json.loads(run_stop("runs", "--json", *where, cwd=tmp_path).stdout)
    assert row["kind"] == "exit" and row["status"] == "failed" and row["generations"] == 3
    assert row["best_score"] == pytest.approx(0.75)
    lineage = run_stop("lineage", store.id, *where, cwd=tmp_path, env={"COLUMNS": "200"})
    assert lineage.returncode == 0, lineage.stderr
    assert "iter 2  solve rate 1.000" in lineage.stdout and "new: add-3" in lineage.stdout
    assert "reverted" not in lineage.stdout and "out of memory" in lineage.stdout
    shown = run_stop("show", store.id, "3", "--diff", *where, cwd=tmp_path)
    assert shown.returncode == 0 and "+++ iteration 3" in shown.stdout
    page = tmp_path / "exit.html"
    exported = run_stop("export", store.id, "--html", str(page), *where, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "Iteration 3" in page.read_text() and "lost: add-3" in page.read_text()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    async def steps(app, pilot):
        assert app.selected.gen == 1
        assert "iteration 1: 1 of 2 tasks solved" in _text(app)
        await pilot.press("down", "down", "down")
        await pilot.pause()
        assert app.selected.gen == 3
        await pilot.press("3")
        await pilot.pause()
        assert "Solve rates" in _text(app) and "-0.500" in _text(app)
        await pilot.press("5")
        await _settle(app, pilot)
        assert "mean solve rate" in _text(app)
        await pilot.press("q")

    _pilot(open_run(runs_dir, store.id), steps)
