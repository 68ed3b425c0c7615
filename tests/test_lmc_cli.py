"""The LMC from the command line: run, tasks, the lmc utility in `stop improve`, bench."""

from __future__ import annotations

import json

import pytest

from stop.lmc import task_by_name
from tests.helpers import run_stop

APPENDIX_1 = "LDL 1 STA 0 LDL 10 SUB 0 BRP 7 HLT"


def test_run_reports_outputs_and_error_kinds(tmp_path):
    (tmp_path / "add.lmc").write_text("ADD 0\nHLT\n")
    proc = run_stop(
        "lmc",
        "run",
        "add.lmc",
        "--input",
        "3,5",
        "--input",
        "4,8",
        "--input",
        "10,1",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert [r["output"] for r in results] == [8, 12, 11]
    (tmp_path / "loop.lmc").write_text("BRA 1\n")
    proc = run_stop("lmc", "run", "loop.lmc", "--input", "1", "--json", cwd=tmp_path)
    (result,) = json.loads(proc.stdout)["results"]
    assert result["kind"] == "runtime" and result["output"] is None
    (tmp_path / "ex1.lmc").write_text(APPENDIX_1)  # one line, whitespace-separated
    proc = run_stop("lmc", "run", "ex1.lmc", "--input", "0", cwd=tmp_path)
    assert proc.returncode == 0 and "24" in proc.stdout  # steps, in the table


def test_tasks_are_reproducible(tmp_path):
    first = run_stop("lmc", "tasks", "--family", "random", "--count", "3", "--json", cwd=tmp_path)
    again = run_stop("lmc", "tasks", "--family", "random", "--count", "3", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    tasks = json.loads(first.stdout)["tasks"]
    assert len(tasks) == 3 and all(len(t["train"]) == 4 and len(t["test"]) == 4 for t in tasks)
    add = json.loads(
        run_stop("lmc", "tasks", "--family", "add", "--n", "4", "--json", cwd=tmp_path).stdout
    )
    assert [t["name"] for t in add["tasks"]] == ["add-2", "add-3", "add-4"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lmc", "run", "bad.lmc", "--input", "1"], "missing its operand"),
        (["lmc", "run", "add.lmc", "--input", "3,x"], "comma-separated integers"),
        (["lmc", "run", "nope.lmc", "--input", "1"], "cannot read nope.lmc"),
        (["lmc", "tasks", "--family", "mul"], "unknown task family 'mul'"),
        (["improve", "--target", "add.lmc", "--utility", "lmc:add-99"], "unknown LMC task"),
        (["improve", "--target", "bad.lmc", "--utility", "lmc:add-4"], "not a valid LMC program"),
    ],
)
def test_bad_input(tmp_path, args, message):
    (tmp_path / "add.lmc").write_text("ADD 0\nHLT\n")
    (tmp_path / "bad.lmc").write_text("ADD\nHLT\n")
    (tmp_path / "script.json").write_text(json.dumps(["```\nHLT\n```"]))
    extra = ["--script", "script.json"] if args[0] == "improve" else []
    proc = run_stop(*args, *extra, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "runs").exists()


def test_improve_an_lmc_program(tmp_path):
    (tmp_path / "zero.lmc").write_text("LDL 0\nHLT\n")
    replies = [
        "Sum the inputs:\n```\nADD 0\nADD 1\nADD 2\nHLT\n```",
        "```\nFOO 1\n```",
        "```\nBRA 1\n```",
        "```\nADD 0\nHLT\n```",
    ]
    (tmp_path / "script.json").write_text(json.dumps(replies))
    proc = run_stop(
        "improve",
        "--target",
        "zero.lmc",
        "--utility",
        "lmc:add-4",
        "--script",
        "script.json",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["improved"] and out["best_score"] == 1.0 and out["baseline_score"] == 0.0
    assert out["best_path"].endswith("best.lmc")
    assert (tmp_path / out["best_path"]).read_text().split() == [
        "ADD",
        "0",
        "ADD",
        "1",
        "ADD",
        "2",
        "HLT",
    ]
    statuses = {c["evaluation"]["status"]: c["evaluation"]["score"] for c in out["candidates"]}
    assert statuses["syntax_error"] == -1 and statuses["crash"] == -1
    prompt = json.loads((tmp_path / out["run_dir"] / "llm.jsonl").read_text().splitlines()[0])[
        "user"
    ]
    assert "Little Man Computer" in prompt
    task = task_by_name("add-4")
    # The model sees the training pairs, never the test pairs that score it.
    assert all(f"inputs {i} -> output {o}" in prompt for i, o in task.train)
    assert not any(f"inputs {i} -> output {o}" in prompt for i, o in task.test)


def test_lmc_reward_hacking_signals():
    from stop.scoring.utility import UtilityOptions
    from utilities.lmc import LMCUtility

    utility = LMCUtility("add-4", UtilityOptions())
    first_train_output = utility.task.train[0][1]
    copied = utility.evaluate(f"LDL {first_train_output}\nHLT\n")
    assert "returns the same output for every input" in copied.findings
    assert "answers with outputs copied from the visible examples" in copied.findings
    honest = utility.evaluate("ADD 0\nADD 1\nADD 2\nHLT\n")
    assert honest.score == 1.0 and honest.findings == []
