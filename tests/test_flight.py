"""Requests kept in flight (stop/host/flight.py): submit and wait over a real HTTP server
on loopback with set latencies, the backend's one concurrency limit, budgets and money
exact under concurrency, evaluations nobody took killed at the end."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest

from stop.bench.latency_server import LatencySchedule, LatencyServer
from stop.bench.pipeline import VARIANTS
from stop.records import Budget, ImproveConfig, ModelSettings, Money, Prices
from tests.helpers import ROOT, improve_run

KNAPSACK = ROOT / "examples" / "knapsack.py"
KNAPSACK_UTILITY = ROOT / "examples" / "knapsack_utility.py"
GREEDY = VARIANTS[2]  # greedy by value


def reply(number: int, body: dict) -> str:
    # The request's number in the program: no two replies are the same program.
    return f"```python\n{GREEDY}# reply {number}\n```"


def config(tmp_path: Path, url: str, improver: Path, **budget) -> ImproveConfig:
    limits = {
        "model_calls": 8,
        "max_responses_per_call": 4,
        "max_tokens": 64,
        "evaluations": 10,
        "timeout_s": 120.0,
    } | budget
    concurrency = limits.pop("concurrency", 4)
    money = limits.pop("money", None)
    return ImproveConfig(
        target=KNAPSACK,
        utility=str(KNAPSACK_UTILITY),
        improver=str(improver),
        model=ModelSettings(
            backend="openai",
            options={
                "model": "m",
                "base_url": url,
                "api_key_env": "STOP_TEST_NO_KEY",
                "concurrency": concurrency,
            },
        ),
        budget=Budget(**limits),
        runs_dir=tmp_path / "runs",
        money=money,
    )


def improver(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "improver.py"
    source = "from stop.errors import BudgetExhausted\n\n\n"
    source += "def improve_algorithm(initial_solution, utility, language_model):\n"
    path.write_text(source + textwrap.indent(textwrap.dedent(body), "    "))
    return path


def record(result, name: str):
    return json.loads((Path(result.run_dir) / "records" / f"{name}.json").read_text())["data"]


def events(result) -> list[dict]:
    lines = (Path(result.run_dir) / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_replies_are_taken_as_they_finish(tmp_path):
    """The first request the server takes is the slow one: it is handed back last, and
    the order the waits were answered in is in the run's log."""
    schedule = LatencySchedule(base_s=0.05, long_s=1.0, every=1000, phase=1)
    body = """
    pending = [language_model.submit("e", f"m{i}") for i in range(4)]
    order = []
    while pending:
        done = language_model.wait(pending)
        pending.remove(done)
        order.append([done.handle, done.result.splitlines()[-2]])
        assert done.error is None and "def pack" in done.result
    utility.record("order", order)
    return initial_solution
    """
    with LatencyServer(schedule, reply) as server:
        result = improve_run(config(tmp_path, server.url, improver(tmp_path, body)))
    assert result.status == "completed", result.improver.error
    order = record(result, "order")
    assert sorted(h for h, _ in order) == [1, 2, 3, 4] and order[-1][1] == "# reply 1"
    delivered = [e["handle"] for e in events(result) if e["event"] == "delivered"]
    assert delivered == [h for h, _ in order]


def test_one_concurrency_limit_per_backend(tmp_path):
    schedule = LatencySchedule(base_s=0.2, long_s=0.2, every=1)
    body = """
    pending = [language_model.submit("e", f"m{i}") for i in range(6)]
    while pending:
        pending.remove(language_model.wait(pending))
    return initial_solution
    """
    path = improver(tmp_path, body)
    with LatencyServer(schedule, reply) as server:
        result = improve_run(config(tmp_path, server.url, path, concurrency=2))
    assert result.status == "completed", result.improver.error
    assert len(server.served) == 6 and server.max_in_flight == 2


def test_call_budget_is_exact_with_requests_in_flight(tmp_path):
    schedule = LatencySchedule(base_s=0.3, long_s=0.3, every=1)
    body = """
    pending, refused = [], None
    for i in range(10):
        try:
            pending.append(language_model.submit("e", f"m{i}"))
        except BudgetExhausted as exc:
            refused = str(exc)
            break
    utility.record("sent", {"sent": len(pending), "refused": refused})
    while pending:
        pending.remove(language_model.wait(pending))
    return initial_solution
    """
    path = improver(tmp_path, body)
    with LatencyServer(schedule, reply) as server:
        result = improve_run(config(tmp_path, server.url, path, model_calls=3, concurrency=8))
    sent = record(result, "sent")
    assert sent["sent"] == 3 and "budget" in sent["refused"]
    assert len(server.served) == 3 and result.usage.calls == 3


def test_money_cap_counts_requests_in_flight_at_their_worst(tmp_path):
    """$1 an output token, 128 tokens a reply at most: a request could cost $128 (its
    prompt is free). Under a $400 cap three may be in flight at once, never a fourth; once
    they are back (their replies are about 75 tokens) there is room again; the cap is
    never passed."""
    prices = Prices(input_per_mtok=0.0, output_per_mtok=1e6, source="test")
    schedule = LatencySchedule(base_s=0.3, long_s=0.3, every=1)
    body = """
    rounds = []
    while True:
        pending = []
        for i in range(8):
            try:
                pending.append(language_model.submit("e", "m"))
            except BudgetExhausted as exc:
                refused = str(exc)
                break
        rounds.append(len(pending))
        while pending:
            pending.remove(language_model.wait(pending))
        if not rounds[-1]:
            break
    utility.record("rounds", {"rounds": rounds, "refused": refused})
    return initial_solution
    """
    path = improver(tmp_path, body)
    money = Money(prices=prices, max_usd=400.0)
    with LatencyServer(schedule, reply) as server:
        limits = {"model_calls": 50, "max_tokens": 128, "money": money, "concurrency": 8}
        result = improve_run(config(tmp_path, server.url, path, **limits))
    assert result.status == "completed", result.improver.error
    rounds = record(result, "rounds")
    assert rounds["rounds"][0] == 3 and rounds["rounds"][-1] == 0
    assert "money cap of $400" in rounds["refused"]
    assert len(rounds["rounds"]) > 2  # room again once replies were in
    assert 0 < result.usage.usd <= 400.0
    assert len(server.served) == sum(rounds["rounds"]) == result.usage.calls


def test_evaluations_run_while_requests_are_in_flight(tmp_path):
    """utility.submit's evaluations come back through the same wait, scored and recorded
    as candidates like utility.evaluate's."""
    schedule = LatencySchedule(base_s=0.1, long_s=0.1, every=1)
    body = """
    pending = [language_model.submit("e", f"m{i}", program=initial_solution) for i in range(3)]
    scores = []
    while pending:
        done = language_model.wait(pending)
        pending.remove(done)
        if done.kind == "reply":
            pending.append(utility.submit(done.result))
        else:
            scores.append(done.result["score"])
    utility.record("scores", scores)
    return initial_solution
    """
    with LatencyServer(schedule, reply) as server:
        result = improve_run(config(tmp_path, server.url, improver(tmp_path, body)))
    assert result.status == "completed", result.improver.error
    scores = record(result, "scores")
    assert len(scores) == 3 and all(s > 0 for s in scores)
    assert result.utility_uses == 3
    assert sum(c.origin == "model" for c in result.candidates) == 3


def test_submitted_evaluations_past_the_budget_are_refused(tmp_path):
    schedule = LatencySchedule(base_s=0.05, long_s=0.05, every=1)
    body = """
    handles, refused = [], None
    try:
        for i in range(5):
            handles.append(utility.submit(initial_solution + f"# {i}\\n"))
    except BudgetExhausted as exc:
        refused = str(exc)
    utility.record("submitted", {"n": len(handles), "refused": refused})
    while handles:
        handles.remove(utility.wait(handles))
    return initial_solution
    """
    with LatencyServer(schedule, reply) as server:
        result = improve_run(config(tmp_path, server.url, improver(tmp_path, body), evaluations=2))
    submitted = record(result, "submitted")
    assert submitted["n"] == 2 and "budget of 2" in submitted["refused"]


def test_unclaimed_evaluations_are_killed_when_the_improver_returns(tmp_path):
    """A hanging candidate submitted and never waited for ends with the improver, not at
    its own 60 s limit."""
    from stop.host.prefetch import Prefetcher
    from stop.records import UtilityOptions
    from stop.sandbox import runner
    from stop.scoring.utility import Target, load_utility

    target = Target(path=KNAPSACK, source=KNAPSACK.read_text())
    utility = load_utility(str(KNAPSACK_UTILITY), target, UtilityOptions(timeout_s=60.0))
    prefetcher = Prefetcher(utility)
    hang = "def pack(weights, values, capacity):\n    while True:\n        pass\n"
    future = prefetcher.future(hang)
    started = threading.Event()
    while not started.wait(0.05):  # until its sandbox runs
        with runner._live_lock:
            if runner._live:
                started.set()
    prefetcher.close()
    evaluation = future.result(timeout=30)  # a hang guard: killed, it ends in moments
    assert evaluation.status != "ok"


@pytest.mark.parametrize("improver_name", ["map_elites", "refine"])
def test_steady_state_improvers_keep_the_pipe_full(tmp_path, improver_name):
    """The built-in MAP-Elites and refine keep `max_in_flight` requests outstanding, and
    spend their budgets exactly."""
    schedule = LatencySchedule(base_s=0.2, long_s=0.6, every=4)
    with LatencyServer(schedule, reply) as server:
        run = config(tmp_path, server.url, Path("x"), model_calls=12, evaluations=13)
        run = run.model_copy(update={"improver": improver_name})
        result = improve_run(run)
    assert result.status == "completed", result.improver.error
    assert server.max_in_flight == 4
    if improver_name == "map_elites":  # refine may stop early: no gain in a while
        assert len(server.served) == 12
    assert result.usage.calls == len(server.served) <= 12
    assert result.utility_uses <= 13
