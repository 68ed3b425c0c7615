"""Checkpoints, the loop, the CLI, and an end-to-end run that learns Add-2 from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import stop.exit.loop as loop
from stop.errors import BadInput
from stop.exit.config import make_config
from stop.exit.loop import evaluate, restore_state, run_exit
from tests.helpers import run_stop

TINY = dict(preset="tiny", max_n=2, rollouts=4, value_rollouts=2, train_steps=1, batch_size=4,
            value_batch_size=2, iterations=1, stop_when_solved=False)  # fmt: skip


def test_checkpoint_round_trip_and_resume(tmp_path):
    config = make_config(**TINY)
    state = run_exit(config, tmp_path)
    back = restore_state(tmp_path, config)
    assert back.iteration == 1 and back.history == state.history
    for a, b in zip(state.model.parameters(), back.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(back.policy_buffer) == len(state.policy_buffer) > 0
    more = run_exit(make_config(**{**TINY, "iterations": 2}), tmp_path, resume=True)
    assert more.iteration == 2 and len(more.history) == 2
    assert more.history[1]["flops_total"] > more.history[0]["flops_total"] > 0


def test_incompatible_and_corrupt_checkpoints_are_rejected(tmp_path):
    run_exit(make_config(**TINY), tmp_path)
    with pytest.raises(BadInput, match="another configuration: preset"):
        restore_state(tmp_path, make_config(**{**TINY, "preset": "cpu"}))
    with pytest.raises(BadInput, match="already holds a run"):
        run_exit(make_config(**TINY), tmp_path)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="not a readable checkpoint"):
        restore_state(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(BadInput, match="not a readable checkpoint"):
        restore_state(tmp_path)
    with pytest.raises(BadInput, match="no checkpoint"):
        restore_state(tmp_path / "missing")
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
    with pytest.raises(KeyboardInterrupt):
        run_exit(make_config(**{**TINY, "iterations": 3}), tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    back = restore_state(tmp_path)
    assert back.iteration == 1
    monkeypatch.setattr(loop, "train_phase", real)
    assert run_exit(make_config(**{**TINY, "iterations": 3}), tmp_path, resume=True).iteration == 3


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
    args = ["--preset", "tiny", "--max-n", "2", "--rollouts", "4", "--iterations", "1",
            "--train-steps", "1", "--batch-size", "4", "--out", "run", "--keep-going"]  # fmt: skip
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
    proc = run_stop("exit", "train", *args[:-3], "--out", "run", "--preset", "cpu", "--resume",
                    cwd=tmp_path)  # fmt: skip
    assert "another configuration" in _one_line_error(proc)
    proc = run_stop("exit", "plot", "run", "--png", "curve.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_learns_add_2_from_scratch(tmp_path: Path):
    """Expert iteration from random weights until greedy decoding solves add-2."""
    torch.set_num_threads(2)
    config = make_config(family="add", max_n=2, rollouts=128, iterations=8, seed=0)
    state = run_exit(config, tmp_path)
    assert state.history[-1]["solve_rates"] == {"add-2": 1.0}
    assert evaluate(restore_state(tmp_path)) == {"add-2": 1.0}  # from the checkpoint
