"""`stop bench pipeline`: the loopback latency server over real HTTP (the schedule, what it
records, the models endpoint stop checks), and the suite's figures, on small latencies.
No test judges the figures themselves: the machine's load decides those."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import openai
import pytest

from stop.bench import pipeline
from stop.bench.latency_server import MODEL, LatencySchedule, LatencyServer, Served
from stop.llm.openai_backend import check_server

SMALL = LatencySchedule(base_s=0.02, long_s=0.1, every=3)


def _client(server: LatencyServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=server.url, max_retries=0, timeout=30)


def _ask(client: openai.OpenAI, text: str = "hello") -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])


def test_schedule_makes_every_kth_request_long():
    assert [SMALL.latency(n) for n in range(1, 7)] == [0.02, 0.02, 0.1, 0.02, 0.02, 0.1]


def test_server_serves_the_schedule_and_records_it():
    with LatencyServer(SMALL, lambda n, body: f"reply {n}") as server:
        client = _client(server)
        replies = [_ask(client, f"prompt {i}") for i in range(6)]
        served = server.served
    assert [r.choices[0].message.content for r in replies] == [f"reply {n}" for n in range(1, 7)]
    assert all(r.usage and r.usage.prompt_tokens > 0 for r in replies)
    assert [s.number for s in served] == [1, 2, 3, 4, 5, 6]
    assert [s.latency_s for s in served] == [0.02, 0.02, 0.1, 0.02, 0.02, 0.1]
    # Each request was held at least its latency (monotonic clock, one process).
    assert all(s.ended - s.started >= s.latency_s for s in served)
    assert server.max_in_flight == 1  # one at a time, as asked


def test_server_counts_requests_held_at_once():
    # The reply is written while the request is in flight: a barrier of 3 there passes
    # only once 3 requests are held together, whatever the machine's speed.
    barrier = threading.Barrier(3, timeout=20)

    def reply(number: int, body: dict) -> str:
        barrier.wait()
        return "ok"

    with LatencyServer(LatencySchedule(base_s=0, long_s=0, every=1), reply) as server:
        client = _client(server)
        threads = [threading.Thread(target=_ask, args=(client,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(server.served) == 3
        assert server.max_in_flight == 3


def test_models_endpoint_answers_as_stop_checks_it():
    with LatencyServer(SMALL, lambda n, body: "") as server:
        check_server(server.url, "unused", "NO_SUCH_KEY")  # raises unless it answers
        with urllib.request.urlopen(server.url + "/models", timeout=10) as response:
            models = json.loads(response.read())
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "/elsewhere", timeout=10)
        assert server.served == []  # the models endpoint is not a completion
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert missing.value.code == 404


def test_a_failing_reply_is_a_500_and_not_served():
    def reply(number: int, body: dict) -> str:
        raise RuntimeError("bug")

    with LatencyServer(SMALL, reply) as server:
        with pytest.raises(openai.InternalServerError):
            _ask(_client(server))
        assert server.served == []


def test_replies_are_distinct_programs():
    programs = {pipeline.reply(n, {}) for n in range(1, 65)}
    assert len(programs) == 64
    for n in range(1, 7):
        code = pipeline.reply(n, {}).split("```python\n")[1].split("```")[0]
        namespace: dict = {}
        exec(compile(code, "variant", "exec"), namespace)
        # Every variant packs within the capacity.
        picked = namespace["pack"]([9, 3, 4, 5], [11, 4, 5, 7], 12)
        assert sum([9, 3, 4, 5][i] for i in picked) <= 12


def test_bench_pipeline_figures_are_consistent():
    schedule = LatencySchedule(base_s=0.05, long_s=0.2, every=4)
    figures = [f.model_dump() for f in pipeline.bench_pipeline(8, 4, schedule)]
    assert [f["name"] for f in figures] == [
        "pipeline-wall-vs-ideal-4-in-flight",
        "pipeline-server-span-vs-ideal-4-in-flight",
        "pipeline-server-span-vs-steady-state-4-in-flight",
    ]
    # The baselines are what the server served: all 8 requests, 2 of them long, 4 lanes.
    ideal = (6 * 0.05 + 2 * 0.2) / 4
    wall, span, steady = figures
    assert wall["baseline"] == span["baseline"] == pytest.approx(ideal)
    assert steady["baseline"] == pytest.approx(0.3)
    for f in figures:
        assert f["unit"] == "s" and f["value"] > 0
        assert f["ratio"] == pytest.approx(f["baseline"] / f["value"], rel=0.02, abs=0.01)
    assert span["value"] == steady["value"] <= wall["value"]  # the server's part, in the run


def _served(latencies: list[float]) -> list[Served]:
    return [Served(number=n, latency_s=s, started=0.0, ended=s) for n, s in enumerate(latencies, 1)]


def test_ideal_and_steady_state_of_the_bench_schedule():
    served = _served([pipeline.SCHEDULE.latency(n) for n in range(1, 65)])
    assert pipeline.ideal_s(served, 8) == pytest.approx(6.0)
    # Sent as lanes free, the eighth slow request (the 64th) starts at 5 s and runs alone.
    assert pipeline.steady_state_s(served, 8) == pytest.approx(7.5)
    # One lane: the two are the sum; as many lanes as requests: the longest.
    assert pipeline.steady_state_s(served, 1) == pytest.approx(48.0)
    assert pipeline.steady_state_s(served, 64) == pytest.approx(2.5)


def test_the_bench_command_dispatches_the_suite(monkeypatch):
    from stop.bench import figure
    from stop.cli.bench import Suite, _run

    made = figure("pipeline-wall-vs-ideal-8-in-flight", 6.0, 7.5, "s", higher_is_better=False)
    monkeypatch.setattr(pipeline, "bench_pipeline", lambda: [made])
    assert _run(Suite("pipeline")) == [made]
