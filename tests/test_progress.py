"""Progress of the long commands on stderr (nothing with --json, where stdout is exactly
one JSON document), the meta-utility's test events behind a self-improve round's
progress, and `stop transfer`'s columns: measured alike, with no interval from one trial."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from tests.helpers import run_stop

UNCHANGED = """def improve_algorithm(initial_solution, utility, language_model):
    return initial_solution
"""


def _stop(tmp_path: Path, script: Path, *args: str):
    # The scripted model answers "x" (no code): the seed improver returns its input.
    proc = run_stop(
        *args, "--script", str(script), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_transfer_shows_progress_and_reports_no_interval_for_one_trial(tmp_path, script):
    path = script(["x"])
    shown = _stop(
        tmp_path, path, "transfer", "--improver", "seed", "--tasks", "parity", "--trials", "1"
    )
    # One step per trial of each column, on stderr; the table alone on stdout.
    for column in ("seed solution", "seed improver", "improver"):
        assert f"{column} on parity: trial 1/1: test " in shown.stderr, shown.stderr
    assert "[3/3]" in shown.stderr and "trial 1/1" not in shown.stdout
    assert "(n=1)" in shown.stdout and "no interval" in shown.stdout
    assert "[0." not in shown.stdout  # no zero-width "[0.478, 0.478]"

    quiet = _stop(
        tmp_path,
        path,
        "transfer",
        "--improver",
        "seed",
        "--tasks",
        "parity",
        "--trials",
        "1",
        "--json",
    )
    assert "trial" not in quiet.stderr
    (row,) = json.loads(quiet.stdout)["rows"]
    for column in ("seed_solution", "seed_improver", "improver"):
        assert row[column]["n"] == 1
        assert row[column]["low"] is None and row[column]["high"] is None, row[column]


def test_an_unchanged_program_scores_alike_in_every_transfer_column(tmp_path, script):
    improver = tmp_path / "unchanged.py"
    improver.write_text(UNCHANGED)
    args = ("transfer", "--improver", str(improver), "--tasks", "parity", "--trials", "2", "--json")
    (row,) = json.loads(_stop(tmp_path, script(["x"]), *args).stdout)["rows"]
    cells = [row[c] for c in ("seed_solution", "seed_improver", "improver")]
    # The seed solution is measured by as many trials as the improvers, not once.
    assert [c["n"] for c in cells] == [2, 2, 2]
    for cell in cells:
        for other in cells:
            assert cell["low"] <= other["mean"] <= cell["high"], cells


def test_compare_shows_progress_and_json_stays_pure(tmp_path, script):
    path = script(["x"])
    args = ("compare", "--improvers", "seed,refine", "--tasks", "parity", "--trials", "1")
    shown = _stop(tmp_path, path, *args)
    # Trial 1 of each improver, then trial 2 of each...: here both at once.
    for name in ("seed", "refine"):
        assert f"{name} on parity: trial 1/1 started" in shown.stderr, shown.stderr
        assert f"{name} on parity: trial 1/1: test " in shown.stderr
    assert "[2/2]" in shown.stderr
    assert "Improvers compared" in shown.stdout and "trial 1/1" not in shown.stdout
    quiet = _stop(tmp_path, path, *args, "--json")
    assert [r["improver"] for r in json.loads(quiet.stdout)] == ["seed", "refine"]
    assert "trial" not in quiet.stderr


def test_bench_mutators_shows_progress_and_json_stays_pure(tmp_path, script):
    path = script(["x"])
    args = ("bench-mutators", "--backend", "scripted", "--samples", "1", "--targets", "fib")
    shown = _stop(tmp_path, path, *args)
    assert "scripted, rewrite, fib: asking the model for 1 mutation(s)" in shown.stderr, (
        shown.stderr
    )
    assert "[2/2] scripted, edit, fib: mutation 1/1: no program" in shown.stderr
    assert "mutation 1/1" not in shown.stdout
    quiet = _stop(tmp_path, path, *args, "--json")
    assert {r["mode"] for r in json.loads(quiet.stdout)} == {"rewrite", "edit"}
    assert "mutation" not in quiet.stderr


def test_bench_shows_progress_and_json_stays_pure(tmp_path):
    shown = run_stop("bench", "lmc", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "[1/1] lmc: lmc-batch-arrays, lmc-batch-outcomes" in shown.stderr, shown.stderr
    quiet = run_stop("bench", "lmc", "--json", cwd=tmp_path)
    assert [r["name"] for r in json.loads(quiet.stdout)] == [
        "lmc-batch-arrays",
        "lmc-batch-outcomes",
    ]
    assert "lmc" not in quiet.stderr


def test_meta_utility_tests_report_their_start_and_end(tmp_path, scripted_model):
    from stop.defaults import profile
    from stop.records import MetaTestFinished, MetaTestStarted
    from stop.scoring.meta import MetaUtility
    from stop.scoring.task import load_task
    from stop.view.self_improve import SelfImproveProgress
    from stop.wiring import Run

    events: list = []
    out = io.StringIO()
    shown = SelfImproveProgress(Console(file=out, width=200))
    budget = profile("scripted").test
    with Run(
        tmp_path / "runs", backend=scripted_model(["x"]), watchers=(events.append, shown)
    ) as run:
        score = MetaUtility(
            [load_task("parity")], run, tests=2, budget=budget, evaluations=0
        ).score(UNCHANGED)
    started = [e for e in events if isinstance(e, MetaTestStarted)]
    finished = [e for e in events if isinstance(e, MetaTestFinished)]
    assert sorted(e.index for e in started) == sorted(e.index for e in finished) == [0, 1]
    assert {(e.task, e.tests) for e in started + finished} == {("parity", 2)}
    assert [(e.status, e.val, e.test) for e in sorted(finished, key=lambda e: e.index)] == [
        (t.improver_status, t.val, t.test) for t in score.tests
    ]
    # A self-improve round shows them: what runs while the improvers and scoring do.
    lines = out.getvalue()
    assert "meta-utility test 1/2 (parity) started" in lines
    assert f"meta-utility test 2/2 (parity): val {score.tests[1].val:.3f}, test " in lines


def test_compare_takes_the_improvers_trials_in_turn(tmp_path, scripted_model):
    # The machine's speed drifts over minutes: trial 1 of every improver, then trial 2 of
    # every improver, so that each trial index meets one machine, two at a time.
    from stop.analysis.transfer import UNCHANGED as NOTHING
    from stop.analysis.transfer import compare
    from stop.defaults import profile
    from stop.records import MetaTestStarted
    from stop.scoring.task import load_task
    from stop.wiring import Run

    events: list = []
    improvers = {"a": NOTHING, "b": NOTHING + "\n# b\n"}
    with Run(tmp_path / "runs", backend=scripted_model(["x"]), watchers=(events.append,)) as run:
        budget = profile("scripted").test
        rows = compare(improvers, [load_task("parity")], run, trials=2, budget=budget)
    started = [(e.improver, e.index) for e in events if isinstance(e, MetaTestStarted)]
    assert sorted(started[:2]) == [("a", 0), ("b", 0)]
    assert sorted(started[2:]) == [("a", 1), ("b", 1)]
    assert [(r.improver, r.score.n) for r in rows] == [("a", 2), ("b", 2)]
    assert rows[0].score.mean == rows[1].score.mean  # the same program, scored alike


def test_each_improver_is_as_often_first_as_last():
    from stop.analysis.transfer import order

    assert order(["a", "b", "c"], 3) == [
        ("a", 0), ("b", 0), ("c", 0),
        ("b", 1), ("c", 1), ("a", 1),
        ("c", 2), ("a", 2), ("b", 2),
    ]  # fmt: skip
    assert order(["a"], 2) == [("a", 0), ("a", 1)]
