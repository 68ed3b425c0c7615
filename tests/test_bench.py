"""`stop bench`: every suite runs its real parts against a baseline measured in the same
run, and reports {name, baseline, value, unit, ratio} with ratio > 1 meaning stop is
better. No test judges the figures themselves: the machine's load decides those."""

from __future__ import annotations

import json

import pytest

from stop.bench import figure
from stop.bench.sandbox import bench_sandbox
from tests.helpers import run_stop

COSTS = {"ms", "s"}  # lower is better; other units are rates


def _consistent(row: dict) -> bool:
    expected = (
        row["baseline"] / row["value"] if row["unit"] in COSTS else row["value"] / row["baseline"]
    )
    return row["ratio"] == pytest.approx(expected, rel=0.02, abs=0.01)


def test_figure_ratio_reads_times_better():
    assert figure("cost", 60.0, 6.0, "ms", higher_is_better=False).ratio == 10.0
    assert figure("rate", 100.0, 250.0, "runs/s", higher_is_better=True).ratio == 2.5
    assert figure("slower", 2.0, 4.0, "s", higher_is_better=False).ratio == 0.5


def test_sandbox_suite_runs_real_sandboxes():
    # bench_sandbox raises if any side, the pooled and fresh sandboxes included, answers
    # wrongly, so a figure exists only for calls that really ran.
    rows = [f.model_dump() for f in bench_sandbox(calls=2)]
    assert [r["name"] for r in rows] == [
        "sandbox-call-vs-python-subprocess",
        "sandbox-call-vs-bare-fork",
        "sandbox-pool-vs-fresh-sandbox",
    ]
    assert all(r["unit"] == "ms" and r["value"] > 0 and _consistent(r) for r in rows)
    # One pooled call is measured against all three baselines.
    assert len({r["value"] for r in rows}) == 1


def test_bench_all_json(tmp_path):
    proc = run_stop("bench", "all", "--json", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    names = [r["name"] for r in rows]
    assert names == [
        "sandbox-call-vs-python-subprocess",
        "sandbox-call-vs-bare-fork",
        "sandbox-pool-vs-fresh-sandbox",
        "lmc-batch-arrays",
        "lmc-batch-outcomes",
        "llm-tokens-per-s",
        "llm-batch-8",
        "improve-replay-from-cache",
        "improve-end-to-end-pool",
        "pipeline-wall-vs-ideal-8-in-flight",
        "pipeline-server-span-vs-ideal-8-in-flight",
        "pipeline-server-span-vs-steady-state-8-in-flight",
    ]
    for row in rows:
        assert set(row) == {"name", "baseline", "value", "unit", "ratio"}
        assert row["baseline"] > 0 and row["value"] > 0 and _consistent(row), row


def test_bench_unknown_suite_is_bad_input(tmp_path):
    proc = run_stop("bench", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
