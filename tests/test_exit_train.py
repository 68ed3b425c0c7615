"""Checkpoints, the loop, the run folder and its events, the CLI, and an end-to-end run
that learns Add-2 from scratch."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
import torch

import stop.exit.loop as loop
from stop.errors import BadInput
from stop.exit.checkpoint import CHECKPOINT_NAME
from stop.exit.config import ExitConfig, make_config
from stop.exit.folder import create, reopen
from stop.exit.loop import evaluate, restore_state, run_exit
from stop.records import FORMAT_VERSION
from stop.store import read_events, read_record
from stop.view.runs import read_run
from tests.helpers import run_stop

TINY = dict(
    preset="tiny",
    max_n=2,
    rollouts=4,
    value_rollouts=2,
    train_steps=1,
    batch_size=4,
    value_batch_size=2,
    iterations=1,
    stop_when_solved=False,
)


def _train(run_dir: Path, resume: bool = False, **fields):
    """`stop exit train --out run_dir` as a call: the loop in that run folder."""
    config = make_config(**{**TINY, **fields})
    store = reopen(run_dir) if resume else create(config, run_dir.parent, out=run_dir)
    return run_exit(config, store, resume=resume)


def _events(run_dir: Path) -> list[str]:
    return [e.event for e in read_events(run_dir)]


def test_checkpoint_round_trip_and_resume(tmp_path):
    run = tmp_path / "run"
    state = _train(run)
    back = restore_state(run, make_config(**TINY))
    assert back.iteration == 1 and back.history == state.history
    for a, b in zip(state.model.parameters(), back.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(back.policy_buffer) == len(state.policy_buffer) > 0
    more = _train(run, resume=True, iterations=2)
    assert more.iteration == 2 and len(more.history) == 2
    assert more.history[1]["flops_total"] > more.history[0]["flops_total"] > 0
    # One run folder: its config, and an event per iteration with the greedy solve rates.
    assert read_record(run / "config.json", ExitConfig, "config") == make_config(**TINY)
    assert _events(run) == ["started", "iteration", "finished", "resumed", "iteration", "finished"]
    saved = [e for e in read_events(run) if e.event == "iteration"]
    assert [(e.iteration, e.solve_rates) for e in saved] == [
        (r["iteration"], r["solve_rates"]) for r in more.history
    ]
    assert json.loads((run / "history.json").read_text())["format_version"] == FORMAT_VERSION


def test_incompatible_and_corrupt_checkpoints_are_rejected(tmp_path):
    run = tmp_path / "run"
    _train(run)
    with pytest.raises(BadInput, match="another configuration: preset"):
        restore_state(run, make_config(**{**TINY, "preset": "cpu"}))
    before = _events(run)
    with pytest.raises(BadInput, match="another configuration: preset"):
        _train(run, resume=True, preset="cpu")
    assert _events(run) == before  # a refused resume is not logged
    with pytest.raises(BadInput, match="already holds a run"):
        _train(run)
    # A checkpoint of another run format (format 1 had no run folder) names both formats.
    payload = torch.load(run / CHECKPOINT_NAME, weights_only=True)
    torch.save({**payload, "format_version": 1}, run / CHECKPOINT_NAME)
    with pytest.raises(
        BadInput, match=f"run format 1, and this stop reads format {FORMAT_VERSION}"
    ):
        restore_state(run)
    data = (run / CHECKPOINT_NAME).read_bytes()
    (run / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="not a readable checkpoint"):
        restore_state(run)
    (run / CHECKPOINT_NAME).write_bytes(b"garbage")
    with pytest.raises(BadInput, match="not a readable checkpoint"):
        restore_state(run)
    with pytest.raises(BadInput, match="no checkpoint"):
        restore_state(tmp_path / "missing")
    (run / "config.json").unlink()
    with pytest.raises(BadInput, match="older stop"):
        reopen(run)
    with pytest.raises(BadInput, match="unknown task family 'nope'"):
        make_config(family="nope")


def test_keyboard_interrupt_leaves_a_resumable_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = loop.train_phase

    def interrupted(state):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(state)

    monkeypatch.setattr(loop, "train_phase", interrupted)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(run, iterations=3)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    back = restore_state(run)
    assert back.iteration == 1
    # The run says it was interrupted, as the other loops' runs do.
    assert _events(run) == ["started", "iteration", "failed"]
    assert read_events(run)[-1].error.startswith("KeyboardInterrupt")
    view = read_run(run)
    assert view.status == "interrupted" and [n.gen for n in view.nodes] == [1]
    monkeypatch.setattr(loop, "train_phase", real)
    assert _train(run, resume=True, iterations=3).iteration == 3
    assert _events(run)[3:] == ["resumed", "iteration", "iteration", "finished"]
    view = read_run(run)
    assert view.status == "finished"
    assert [(n.gen, n.parent) for n in view.nodes] == [(1, None), (2, 1), (3, 2)]


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    assert "unknown task family" in _one_line_error(
        run_stop("exit", "train", "--family", "nope", cwd=tmp_path)
    )
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in _one_line_error(
        run_stop("exit", "eval", "bad.pt", cwd=tmp_path)
    )


def test_cli_train_eval_plot_json(tmp_path):
    args = [
        "--preset",
        "tiny",
        "--max-n",
        "2",
        "--rollouts",
        "4",
        "--iterations",
        "1",
        "--train-steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        "run",
        "--keep-going",
    ]
    proc = run_stop("exit", "train", *args, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result["solve_rates"]) == {"add-2"}
    assert 0 <= result["solve_rates"]["add-2"] <= 1
    flops = result["flops"]
    assert flops["total"] == flops["search"] + flops["train"] and flops["search"] > 0
    proc = run_stop("exit", "eval", "run", "--max-n", "3", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)["solve_rates"]) == {"add-2", "add-3"}
    proc = run_stop(
        "exit", "train", *args[:-3], "--out", "run", "--preset", "cpu", "--resume", cwd=tmp_path
    )
    assert "another configuration" in _one_line_error(proc)
    proc = run_stop("exit", "plot", "run", "--png", "curve.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_run_folder_is_listed_viewed_and_resumed_by_id(tmp_path):
    args = "--preset tiny --max-n 3 --rollouts 4 --train-steps 1 --batch-size 4 --keep-going"
    args = args.split()
    proc = run_stop("exit", "train", *args, "--iterations", "2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    run_id = result["run_id"]
    assert re.fullmatch(r"\d{8}-\d{6}-exit-[0-9a-f]{6}", run_id)
    run = tmp_path / "runs" / run_id
    assert Path(result["run_dir"]) == Path("runs") / run_id
    assert {"config.json", "events.jsonl", CHECKPOINT_NAME, "history.json"} <= {
        p.name for p in run.iterdir()
    }
    listed = run_stop("runs", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["run_id"] == run_id and row["kind"] == "exit" and row["status"] == "finished"
    assert row["generations"] == 2 and row["rounds"] == 2
    assert row["best_score"] == pytest.approx(statistics.mean(result["solve_rates"].values()))
    table = run_stop("runs", cwd=tmp_path, env={"COLUMNS": "200"})
    assert run_id in table.stdout and "2/2" in table.stdout

    lineage = run_stop("lineage", run_id, cwd=tmp_path, env={"COLUMNS": "200"})
    assert lineage.returncode == 0, lineage.stderr
    assert "iter 1" in lineage.stdout and "iter 2" in lineage.stdout
    data = json.loads(run_stop("lineage", run_id, "--json", cwd=tmp_path).stdout)
    assert [(g["gen"], g["parent"]) for g in data["generations"]] == [(1, None), (2, 1)]
    assert data["generations"][-1]["solve_rates"] == result["solve_rates"]
    shown = run_stop("show", run_id, "2", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for task, rate in result["solve_rates"].items():
        assert re.search(rf"{task}\s+{rate:.3f}", shown.stdout), shown.stdout

    # Resumed by run id: the same folder goes on, and says so in its events.
    resume = ["--iterations", "3", "--resume", "--out", run_id, "--json"]
    proc = run_stop("exit", "train", *args, *resume, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["iterations"] == 3
    assert _events(run)[-3:] == ["resumed", "iteration", "finished"]
    assert [p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")] == [run_id]


def test_learns_add_2_from_scratch(tmp_path: Path):
    """Expert iteration from random weights until greedy decoding solves add-2."""
    torch.set_num_threads(2)
    config = make_config(family="add", max_n=2, rollouts=128, iterations=8, seed=0)
    state = run_exit(config, create(config, tmp_path / "runs"))
    assert state.history[-1]["solve_rates"] == {"add-2": 1.0}
    (run,) = (tmp_path / "runs").iterdir()
    assert evaluate(restore_state(run)) == {"add-2": 1.0}  # from the checkpoint
    assert read_run(run).best.solve_rates == {"add-2": 1.0}
