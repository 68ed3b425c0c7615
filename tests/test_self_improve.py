"""Self-improvement: the loop keeps better improvers, reverts worse ones, saves every
generation as code, and resumes after kill -9 with the same lineage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stop.defaults import LOCAL
from stop.records import Budget, GenerationRecord, ModelSettings, SelfImproveConfig
from stop.sources import load_improver
from tests import improvers as I
from tests.helpers import STOP, run_stop, self_improve_run
from tests.openai_server import CannedServer

# Two samples per test: the seed improver sees lpn replies 0 and 1 (useless); an improver
# that samples twice also sees reply 2, which solves the task.
LPN_REPLIES = [I.ZEROS_LPN, I.ZEROS_LPN, I.GOOD_LPN, I.ZEROS_LPN]
BUDGET = Budget(model_calls=4, max_responses_per_call=2, max_tokens=256, evaluations=5)


def _config(tmp_path: Path, improver_replies: list[str], rounds: int = 2) -> SelfImproveConfig:
    script = tmp_path / "script.json"
    script.write_text(I.script(improver_replies, LPN_REPLIES))
    return SelfImproveConfig(
        rounds=rounds,
        tests=2,
        model=ModelSettings(backend="scripted", script=script),
        round_budget=LOCAL.round,
        test_budget=BUDGET,
        runs_dir=tmp_path / "runs",
    )


def test_a_stronger_improver_is_kept_and_saved_as_code(tmp_path):
    store, generations = self_improve_run(_config(tmp_path, [I.STRONGER, I.LAZY]))
    assert [g.gen for g in generations] == [0, 1, 2]
    seed, first, second = generations
    assert seed.kept and seed.parent is None
    assert first.kept and first.parent == 0
    assert first.meta_utility_val > seed.meta_utility_val
    assert first.meta_utility_val == 1.0  # it found the solving reply on every test
    assert second.parent == 1  # the kept generation became current
    # Every generation is a file that compiles and defines improve_algorithm, and its
    # record reads back.
    for g in generations:
        source = (store.dir / g.path).read_text()
        namespace: dict = {}
        exec(compile(source, g.path, "exec"), namespace)
        assert callable(namespace["improve_algorithm"])
        record = store.dir / g.path.replace(".py", ".json")
        assert GenerationRecord.model_validate_json(record.read_text()) == g
    # The candidates it was chosen from are recorded with their scores.
    assert any(c.val == 1.0 for c in first.candidates)
    # A saved generation is usable as an improver.
    assert "range(2)" in load_improver(f"{store.id}:1", tmp_path / "runs")


def test_worse_and_broken_proposals_are_reverted(tmp_path):
    _, generations = self_improve_run(_config(tmp_path, [I.BROKEN, I.LAZY], rounds=1))
    seed, proposal = generations
    assert not proposal.kept
    assert proposal.parent == 0
    assert proposal.meta_utility_val <= seed.meta_utility_val
    rejected = [c for c in proposal.candidates if c.origin == "model"]
    assert {c.status for c in rejected} <= {"ok", "crash"}
    assert any(c.status == "crash" for c in rejected)  # BROKEN scored 0 on every test


def test_non_iterative_variant_always_uses_the_seed(tmp_path):
    config = _config(tmp_path, [I.STRONGER, I.LAZY]).model_copy(update={"iterative": False})
    store, generations = self_improve_run(config)
    prompts = [
        json.loads(line)["user"]
        for line in (store.dir / "llm.jsonl").read_text().splitlines()
        if "def meta_utility" in line
    ]
    # Every round's improving prompt came from the seed improver's template.
    assert prompts and all("Be as creative as you can" in p for p in prompts)
    assert generations[1].kept


def _run(tmp_path: Path, runs: str, *extra: str) -> subprocess.Popen:
    args = [
        *STOP,
        "self-improve",
        "--rounds",
        "3",
        "--tests",
        "2",
        "--script",
        str(tmp_path / "script.json"),
        "--runs-dir",
        str(tmp_path / runs),
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.Popen(
        [*args, *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )


def test_resume_after_kill_gives_the_same_lineage(tmp_path):
    (tmp_path / "script.json").write_text(I.script([I.STRONGER, I.LAZY], LPN_REPLIES))
    uninterrupted = _run(tmp_path, "a")
    expected = json.loads(uninterrupted.communicate(timeout=300)[0])

    victim = _run(tmp_path, "b")
    runs = tmp_path / "b"
    deadline = time.monotonic() + 120
    # Killed once generation 0 is saved: round 1 takes seconds, while rounds 2 and 3 can
    # follow it within milliseconds (a reverted round's improver is scored already).
    while not list(runs.glob("*/generations/gen_000.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)  # mid-round 1
    victim.wait()
    (run_id,) = [p.name for p in runs.iterdir() if not p.name.startswith(".")]
    done_before = sorted(p.name for p in (runs / run_id / "generations").glob("*.json"))
    assert "gen_003.json" not in done_before

    resumed = _run(tmp_path, "b", "--resume", run_id)
    got = json.loads(resumed.communicate(timeout=300)[0])
    assert resumed.returncode == 0
    assert got["run_id"] == run_id

    # What a generation is, without how long it took or what the cache saved.
    def lineage(out: dict) -> list[dict]:
        strip = ("seconds", "usage")
        return [
            {k: v for k, v in g.items() if k not in strip}
            | {"meta": {k: v for k, v in g["meta"].items() if k != "usage"}}
            | {"source": (Path(out["run_dir"]) / g["path"]).read_text()}
            for g in out["generations"]
        ]

    assert lineage(got) == lineage(expected)
    # No model call was paid twice: fresh (uncached) answers across the killed and the
    # resumed process number no more than in the uninterrupted run.
    fresh = [
        json.loads(line)["cached"]
        for line in (runs / run_id / "llm.jsonl").read_text().splitlines()
    ].count(False)
    expected_fresh = [
        json.loads(line)["cached"]
        for run in (tmp_path / "a").iterdir()
        if run.is_dir() and not run.name.startswith(".")
        for line in (run / "llm.jsonl").read_text().splitlines()
    ].count(False)
    assert fresh <= expected_fresh


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "lpn,nope"], "unknown task 'nope'"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--rounds", "-2"], "--rounds must be at least 1"),
        (["--resume", "no-such-run"], "no run 'no-such-run'"),
    ],
)
def test_bad_input(tmp_path, args, message):
    (tmp_path / "script.json").write_text(I.script([I.LAZY], LPN_REPLIES))
    proc = run_stop(
        "self-improve",
        "--script",
        str(tmp_path / "script.json"),
        "--runs-dir",
        str(tmp_path / "runs"),
        *args,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_resume_refuses_a_different_configuration_and_corrupt_records(tmp_path):
    store, _ = self_improve_run(_config(tmp_path, [I.LAZY], rounds=1))
    script = str(tmp_path / "script.json")
    common = ["self-improve", "--script", script, "--runs-dir", str(tmp_path / "runs")]
    proc = run_stop(*common, "--resume", store.id, "--tasks", "maxcut", cwd=tmp_path)
    assert proc.returncode == 2 and "started with --tasks lpn" in proc.stderr
    record = store.dir / "generations" / "gen_001.json"
    before = record.read_text()
    record.write_text(before.replace('"kept"', '"kept_or_not"'))
    proc = run_stop(*common, "--resume", store.id, cwd=tmp_path)
    assert proc.returncode == 2 and "corrupt generation record" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_self_improve_against_a_real_http_server(tmp_path):
    """As a new user would: an OpenAI-compatible server whose replies include a stronger
    improver; generation files exist and import, and kept generations score at least as
    well as their parents on validation."""
    rules = json.loads(I.script([I.STRONGER, I.LAZY], LPN_REPLIES))
    with CannedServer(rules) as server:
        proc = run_stop(
            "self-improve",
            "--rounds",
            "2",
            "--tests",
            "2",
            "--base-url",
            server.url,
            "--model",
            "canned",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--json",
            cwd=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    generations = {g["gen"]: g for g in out["generations"]}
    assert sorted(generations) == [0, 1, 2]
    # The server answered every request (a failing server would leave every score at 0).
    assert len(server.requests) > 0
    assert generations[0]["meta_utility_val"] > 0.5
    for g in generations.values():
        path = str(Path(out["run_dir"]) / g["path"])
        code = subprocess.run(
            [sys.executable, "-c", f"import runpy; runpy.run_path({path!r})"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert code.returncode == 0, code.stderr
        if g["kept"] and g["parent"] is not None:
            assert g["meta_utility_val"] >= generations[g["parent"]]["meta_utility_val"]
    assert Path(out["best_path"]).is_file()


def test_transfer_table_compares_seed_and_improved_improver(tmp_path):
    store, _ = self_improve_run(_config(tmp_path, [I.STRONGER, I.LAZY], rounds=1))
    proc = run_stop(
        "transfer",
        "--improver",
        f"{store.id}:1",
        "--tasks",
        "lpn",
        "--trials",
        "2",
        "--script",
        str(tmp_path / "script.json"),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["rows"]
    assert row["task"] == "lpn"
    for column in ("seed_solution", "seed_improver", "improver"):
        cell = row[column]
        assert cell["low"] <= cell["mean"] <= cell["high"]
    assert row["seed_improver"]["n"] == row["improver"]["n"] == 2
    # Server-sized defaults (four samples) let both improvers find the solving reply.
    assert row["improver"]["mean"] >= row["seed_solution"]["mean"]
    proc = run_stop("transfer", "--improver", f"{store.id}:7", "--tasks", "lpn", cwd=tmp_path)
    assert proc.returncode == 2 and "has no generation 7" in proc.stderr
