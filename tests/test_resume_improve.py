"""`stop improve --resume`: a run killed halfway goes on from the cache, paying for no
reply twice; a run replayed whole ends with the same result; a killed run reads as
killed; resuming what cannot be resumed is bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from stop.bench.latency_server import LatencySchedule, LatencyServer
from tests.helpers import ROOT, STOP, run_stop

KNAPSACK = ROOT / "examples" / "knapsack.py"
KNAPSACK_UTILITY = ROOT / "examples" / "knapsack_utility.py"
VARIANTS = [
    "    return [i for i in range(len(weights)) if weights[i] <= capacity][:1]\n",
    "    order = sorted(range(len(weights)), key=lambda i: -values[i])\n"
    "    picked, load = [], 0\n"
    "    for i in order:\n"
    "        if load + weights[i] <= capacity:\n"
    "            picked.append(i)\n"
    "            load += weights[i]\n"
    "    return picked\n",
    "    return []\n",
]


class Replies:
    """A reply decided by the request alone (its messages and sampling seed), so that a
    request asked again gets the same reply; every request's key is kept."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, number: int, body: dict) -> str:
        key = hashlib.sha256(
            json.dumps([body.get("messages"), body.get("seed")]).encode()
        ).hexdigest()
        with self._lock:
            self.keys.append(key)
        variant = VARIANTS[int(key, 16) % len(VARIANTS)]
        code = f"def pack(weights, values, capacity):\n{variant}# {key[:8]}\n"
        return f"```python\n{code}```"


def improve_args(url: str, runs: Path) -> list[str]:
    return [
        "improve",
        "--target",
        str(KNAPSACK),
        "--utility",
        str(KNAPSACK_UTILITY),
        "--improver",
        "map_elites",
        "--base-url",
        url,
        "--model",
        "m",
        "--samples",
        "4",
        "--concurrency",
        "4",
        "--llm-budget",
        "16",
        "--budget",
        "17",
        "--runs-dir",
        str(runs),
    ]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}


def events(run_dir: Path) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def attempts(run_dir: Path) -> list[list[int]]:
    """The handles each attempt's waits were answered with."""
    found: list[list[int]] = [[]]
    for event in events(run_dir):
        if event["event"] == "resumed":
            found.append([])
        elif event["event"] == "delivered":
            found[-1].append(event["handle"])
    return found


def only_run(runs: Path) -> Path:
    (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return run_dir


def test_a_killed_run_resumes_without_paying_twice(tmp_path):
    schedule = LatencySchedule(base_s=0.3, long_s=1.2, every=4)
    replies = Replies()
    runs = tmp_path / "runs"
    with LatencyServer(schedule, replies) as server:
        command = [*STOP, *improve_args(server.url, runs), "--json"]
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            # Halfway: once six waits have been answered.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                logs = list(runs.glob("*/events.jsonl")) if runs.exists() else []
                if logs and len(attempts(logs[0].parent)[0]) >= 6:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be killed"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        run_dir = only_run(runs)
        killed = attempts(run_dir)[0]
        saved = sorted((run_dir / "candidates").glob("*.py"))
        before = [p.read_text() for p in saved]
        listed = run_stop("runs", "--json", "--runs-dir", str(runs), cwd=tmp_path)
        assert json.loads(listed.stdout)[0]["status"] == "killed"
        sent_before = len(replies.keys)

        resumed = run_stop(
            "improve", "--resume", run_dir.name, "--runs-dir", str(runs), "--json", cwd=tmp_path
        )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout)
    assert result["run_id"] == run_dir.name and result["status"] == "completed"
    # The replies that came back before the kill were replayed, not asked for again: only
    # the requests in flight at the kill (at most 4) may have been sent twice.
    repeated = len(replies.keys) - len(set(replies.keys))
    assert repeated <= 4, (repeated, sent_before, len(replies.keys))
    assert result["usage"]["cached"] >= len(set(replies.keys[:sent_before])) - 4
    # The resumed attempt was handed its replies and scores in the killed one's order, and
    # scored the same candidates first.
    assert attempts(run_dir)[-1][: len(killed)] == killed
    after = [(run_dir / c["path"]).read_text() for c in result["candidates"] if c["path"]]
    assert after[: len(before)] == before


def test_a_run_replayed_whole_ends_with_the_same_result(tmp_path):
    """A finished run, cut back to where a kill just before its end would leave it, is
    resumed with no request to the server and the same candidates, scores and choice."""
    schedule = LatencySchedule(base_s=0.1, long_s=0.5, every=4)
    replies = Replies()
    runs = tmp_path / "runs"
    with LatencyServer(schedule, replies) as server:
        first = run_stop(*improve_args(server.url, runs), "--json", cwd=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        original = json.loads(first.stdout)
        sent = len(replies.keys)
        run_dir = only_run(runs)
        lines = (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
        last = max(i for i, line in enumerate(lines) if '"delivered"' in line)
        (run_dir / "events.jsonl").write_text("".join(lines[: last + 1]))
        (run_dir / "result.json").unlink()
        shutil.rmtree(run_dir / "candidates")  # the resume writes them all again

        again = run_stop(
            "improve", "--resume", run_dir.name, "--runs-dir", str(runs), "--json", cwd=tmp_path
        )
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads(again.stdout)
    assert len(replies.keys) == sent  # nothing paid twice
    assert resumed["usage"]["cached"] == resumed["usage"]["calls"] == original["usage"]["calls"]
    assert resumed["best_score"] == original["best_score"]
    assert Path(resumed["best_path"]).read_text() == Path(original["best_path"]).read_text()

    def scored(result: dict) -> list[tuple]:
        return [
            (c["origin"], c["evaluation"]["status"], c["evaluation"]["score"])
            for c in result["candidates"]
        ]

    assert scored(resumed) == scored(original)
    # Deterministic evaluations came from the evaluation cache, not the sandbox.
    assert any(c["evaluation"]["reused"] == "cache" for c in resumed["candidates"])


def test_what_cannot_be_resumed_is_bad_input(tmp_path, script):
    replies = script(["```python\ndef fib(n):\n    return n\n```"])
    args = ("--script", str(replies), "--runs-dir", "runs")
    done = run_stop("improve", "--target", str(ROOT / "examples" / "fib.py"), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = only_run(tmp_path / "runs").name
    run_dir = tmp_path / "runs" / run_id
    finished = [
        (("improve", "--resume", run_id, "--runs-dir", "runs"), "has finished"),
        (("self-improve", "--resume", run_id, "--runs-dir", "runs"), run_id),
    ]
    # Cut back to a run killed before its end.
    unfinished = "".join(
        line
        for line in (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
        if '"finished"' not in line
    )
    killed = [
        (("improve", "--resume", run_id, "--runs-dir", "runs", "--seed", "3"), "--seed"),
        (("improve", "--resume", run_id, "--runs-dir", "runs", "--max-usd", "1"), "--max-usd"),
    ]
    for cases in (finished, killed):
        if cases is killed:
            (run_dir / "events.jsonl").write_text(unfinished)
        check(tmp_path, cases)


def check(tmp_path: Path, cases: list) -> None:
    for command, words in cases:
        before = sorted(p.name for p in (tmp_path / "runs").rglob("*"))
        failed = run_stop(*command, cwd=tmp_path)
        assert failed.returncode == 2, failed.stderr
        lines = [line for line in failed.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], failed.stderr
        assert sorted(p.name for p in (tmp_path / "runs").rglob("*")) == before


@pytest.mark.parametrize("flag", ["--no-cache"])
def test_a_run_without_a_cache_is_not_resumed(tmp_path, script, flag):
    replies = script(["```python\ndef fib(n):\n    return n\n```"])
    args = ("--script", str(replies), "--runs-dir", "runs", flag)
    done = run_stop("improve", "--target", str(ROOT / "examples" / "fib.py"), *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_dir = only_run(tmp_path / "runs")
    lines = (run_dir / "events.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "events.jsonl").write_text("".join(x for x in lines if '"finished"' not in x))
    failed = run_stop("improve", "--resume", run_dir.name, "--runs-dir", "runs", cwd=tmp_path)
    assert failed.returncode == 2 and "--no-cache" in failed.stderr
