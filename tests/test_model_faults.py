"""Model faults: a misbehaving OpenAI-compatible server, the real openai client, real HTTP.

Whatever the server does (429, 500, too slow, trickling, malformed JSON, empty choices,
no content, truncated content, a reply of 1 MB), each sample ends as a text or a typed
ModelError, is recorded once against its call, is charged to the call budget once (the
SDK's retries are not charges), and the run completes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stop.errors import BudgetExhausted, ModelError
from stop.llm import build_backend
from stop.llm import openai_backend as openai_backend_module
from stop.llm.cache import ResponseCache, cache_key
from stop.llm.model import MIN_REPLY_CHARS, LanguageModel
from stop.records import Budget, ImproveConfig, ModelSettings
from tests import replies
from tests.fault_server import (
    E429,
    E500,
    EMPTY_CHOICES,
    MALFORMED,
    MEGABYTE,
    NO_CONTENT,
    NOT_AN_OBJECT,
    OK,
    SLOW,
    TRICKLE,
    FaultServer,
    huge,
    truncated,
)
from tests.helpers import FIB, improve_run, run_stop

TIMEOUT_S = 1.0  # per HTTP attempt; the SDK makes three


class Recorder:
    def __init__(self) -> None:
        self.exchanges: list = []  # (prompt, completion)
        self.failures: list = []  # (prompt, error)


def make_model(
    server: FaultServer, *, budget_calls: int = 100, cache: ResponseCache | None = None
) -> tuple[LanguageModel, Recorder]:
    backend = build_backend(
        ModelSettings(backend="openai", base_url=server.url, model="faulty", timeout_s=TIMEOUT_S)
    )
    seen = Recorder()
    model = LanguageModel(
        backend,
        max_responses_per_call=8,
        max_tokens=64,
        budget_calls=budget_calls,
        cache=cache,
        on_exchange=lambda p, c: seen.exchanges.append((p, c)),
        on_failure=lambda p, e: seen.failures.append((p, e)),
    )
    return model, seen


# --- one sample, one fault -----------------------------------------------------------------

FAULTS = {
    # fault: (action, HTTP attempts the SDK makes, what the error says)
    "429": (E429, 3, "RateLimitError"),
    "500": (E500, 3, "InternalServerError"),
    "malformed_json": (MALFORMED, 1, "malformed JSON"),
    "not_an_object": (NOT_AN_OBJECT, 1, "not an object"),
    "empty_body": ({"raw": ""}, 1, "malformed JSON"),
    "empty_choices": (EMPTY_CHOICES, 1, "no choices"),
    "no_content": (NO_CONTENT, 1, "no text content"),
    "choices_not_a_list": ({"raw": '{"choices": "nope"}'}, 1, "no choices"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_one_typed_error_recorded_and_charged_once(fault: str) -> None:
    action, attempts, says = FAULTS[fault]
    with FaultServer({0: [action]}, replies.MEMO) as server:
        model, seen = make_model(server)
        with pytest.raises(ModelError, match=says):
            model.prompt("expert", "improve this")
        assert server.attempts(0) == attempts  # the SDK's retries, and no layer on top
    assert model.usage.calls == 1 and model.usage.failed == 1  # one charge, not `attempts`
    assert model.usage.tokens == 0 and model.budget == 99
    assert seen.exchanges == []
    [(prompt, error)] = seen.failures
    assert prompt.message == "improve this" and prompt.sample == 0
    assert says in str(error) and server.url in str(error)


def test_a_slow_server_times_out_within_the_timeout_and_retries() -> None:
    with FaultServer({0: [SLOW]}, replies.MEMO) as server:
        model, seen = make_model(server)
        started = time.monotonic()
        with pytest.raises(ModelError, match="APITimeoutError"):
            model.prompt("expert", "improve this")
        elapsed = time.monotonic() - started
        assert server.attempts(0) == 3
    # Three attempts of 1 s and the SDK's backoff (under 1.5 s), not the server's 30 s.
    assert 3 * TIMEOUT_S <= elapsed < 3 * TIMEOUT_S + 4
    assert model.usage.calls == 1 and model.usage.failed == 1 and len(seen.failures) == 1


def test_a_trickling_body_is_cut_at_the_timeout() -> None:
    """Each read is quick (so the SDK's read timeout never fires), the body takes 4 s."""
    with FaultServer({0: [TRICKLE]}, replies.MEMO) as server:
        model, seen = make_model(server)
        started = time.monotonic()
        with pytest.raises(ModelError, match="took over 1 s"):
            model.prompt("expert", "improve this")
        assert time.monotonic() - started < 3.5
        assert server.attempts(0) == 1
    assert model.usage.failed == 1 and len(seen.failures) == 1


def test_retries_that_succeed_are_one_charge_each() -> None:
    plan = {0: [E500, E500, OK], 1: [E429, OK]}
    with FaultServer(plan, replies.MEMO) as server:
        model, seen = make_model(server)
        texts = model.batch_prompt("expert", ["improve this"] * 2)
        assert (server.attempts(0), server.attempts(1)) == (3, 2)
    assert texts == [replies.MEMO, replies.MEMO]
    assert model.usage.calls == 2 and model.usage.failed == 0 and seen.failures == []
    assert model.usage.prompt_tokens == 2 * 50  # what the server reported, once per sample
    assert len(seen.exchanges) == 2


def test_truncated_content_is_kept_and_recorded() -> None:
    cut = replies.MEMO[: len(replies.MEMO) // 2]
    with FaultServer({0: [truncated(cut)]}, replies.MEMO) as server:
        model, seen = make_model(server)
        assert model.prompt("expert", "improve this") == cut
    [(_, completion)] = seen.exchanges
    assert completion.finish_reason == "length" and completion.clipped_chars == 0
    assert model.usage.truncated == 1 and model.usage.failed == 0


def test_a_megabyte_reply_is_clipped_before_it_is_cached_or_logged(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    with FaultServer({0: [huge()]}, replies.MEMO) as server:
        model, seen = make_model(server, cache=cache)
        text = model.prompt("expert", "improve this")
    assert model.max_reply_chars == MIN_REPLY_CHARS
    assert len(text) == MIN_REPLY_CHARS and text.startswith("```python\ndef fib(n):")
    [(prompt, completion)] = seen.exchanges
    assert completion.clipped_chars == MEGABYTE - MIN_REPLY_CHARS
    assert completion.finish_reason == "stop"
    assert model.usage.truncated == 1 and model.usage.failed == 0
    stored = cache.get(cache_key(model.backend.id, prompt))
    assert stored is not None and stored.text == text
    assert stored.clipped_chars == MEGABYTE - MIN_REPLY_CHARS
    cache.close()
    assert (tmp_path / "cache.sqlite3").stat().st_size < 4 * MIN_REPLY_CHARS


def test_a_body_past_the_byte_cap_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(openai_backend_module, "MAX_BODY_BYTES", 100_000)
    with FaultServer({0: [huge()]}, replies.MEMO) as server:
        model, seen = make_model(server)
        with pytest.raises(ModelError, match="bytes refused"):
            model.prompt("expert", "improve this")
        assert server.attempts(0) == 1
    assert model.usage.failed == 1 and len(seen.failures) == 1


def test_implausible_token_counts_give_no_budget_back() -> None:
    usage = {"prompt_tokens": -(10**9), "completion_tokens": "many"}
    with FaultServer({0: [{"usage": usage}]}, replies.MEMO) as server:
        model, _ = make_model(server)
        model.prompt("expert", "improve this")
    assert model.usage.prompt_tokens > 0 and model.usage.completion_tokens > 0


# --- batches ---------------------------------------------------------------------------------


def test_samples_of_one_prompt_that_came_back_are_returned(tmp_path: Path) -> None:
    """Samples of one prompt are interchangeable: the call returns those that came back."""
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    plan = {1: [MALFORMED], 3: [EMPTY_CHOICES]}
    with FaultServer(plan, replies.MEMO) as server:
        model, seen = make_model(server, cache=cache)
        texts = model.batch_prompt("expert", ["improve this"] * 4)
        assert texts == [replies.MEMO, replies.MEMO]
        assert model.usage.calls == 4 and model.usage.failed == 2
        assert [p.sample for p, _ in seen.failures] == [1, 3]
        assert [p.sample for p, _ in seen.exchanges] == [0, 2]

        # A re-run (same server, now healthy) replays the samples that came back and asks
        # again only for the failed ones.
        server.plan, server.default_reply = {}, replies.WRONG
        before = len(server.requests)
        again, _ = make_model(server, cache=cache)
        texts = again.batch_prompt("expert", ["improve this"] * 4)
        assert sorted(r["seed"] for r in server.requests[before:]) == [1, 3]
    assert texts == [replies.MEMO, replies.WRONG, replies.MEMO, replies.WRONG]
    assert again.usage.calls == 4 and again.usage.cached == 2 and again.usage.failed == 0
    cache.close()


def test_a_failure_among_different_messages_fails_the_call_but_keeps_the_others(
    tmp_path: Path,
) -> None:
    """Answers to different messages are positional: the call fails rather than shift them,
    but the answers that came back are logged, cached and charged."""
    cache = ResponseCache(tmp_path / "cache.sqlite3")
    with FaultServer({"message b": [MALFORMED]}, replies.MEMO) as server:
        model, seen = make_model(server, cache=cache)
        with pytest.raises(ModelError, match="1 of 3 samples failed.*malformed JSON"):
            model.batch_prompt("expert", ["message a", "message b", "message c"])
    assert model.usage.calls == 3 and model.usage.failed == 1
    assert [p.message for p, _ in seen.exchanges] == ["message a", "message c"]
    assert [p.message for p, _ in seen.failures] == ["message b"]
    assert model.usage.prompt_tokens == 2 * 50  # the answers that came back are charged
    for prompt, _ in seen.exchanges:
        assert cache.get(cache_key(model.backend.id, prompt)) is not None
    cache.close()


def test_failed_calls_use_up_the_budget_and_never_exceed_it() -> None:
    with FaultServer({}, replies.MEMO, default=[E429]) as server:
        model, seen = make_model(server, budget_calls=3)
        errors = 0
        with pytest.raises(BudgetExhausted):
            for _ in range(10):
                try:
                    model.prompt("expert", "improve this")
                except ModelError:
                    errors += 1
        assert len(server.requests) == 3 * 3  # three samples, three attempts each
    assert errors == 3
    assert model.usage.calls == 3 and model.usage.failed == 3 and model.budget == 0
    assert len(seen.failures) == 3


# --- whole runs ------------------------------------------------------------------------------


def _config(
    tmp_path: Path, server: FaultServer, evaluations: int = 9, model_calls: int = 16, **kw
) -> ImproveConfig:
    return ImproveConfig(
        target=FIB,
        model=ModelSettings(
            backend="openai", base_url=server.url, model="faulty", timeout_s=TIMEOUT_S
        ),
        budget=Budget(
            model_calls=model_calls,
            max_responses_per_call=8,
            max_tokens=256,
            evaluations=evaluations,
        ),
        runs_dir=tmp_path / "runs",
        **kw,
    )


def _llm_log(result) -> list[dict]:
    lines = (Path(result.run_dir) / "llm.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda e: e["sample"])


def test_a_run_with_every_fault_in_one_batch_completes(tmp_path: Path) -> None:
    plan = {
        0: [E429],
        1: [E500],
        2: [SLOW],
        3: [MALFORMED],
        4: [EMPTY_CHOICES],
        5: [truncated(replies.MEMO[: len(replies.MEMO) // 2])],
        6: [huge()],
        7: [OK],
    }
    with FaultServer(plan, replies.MEMO) as server:
        result = improve_run(_config(tmp_path, server))
    assert result.status == "completed" and result.improver.status == "ok"
    assert result.improved and "lru_cache" in Path(result.best_path).read_text()
    usage = result.usage
    assert (usage.calls, usage.failed, usage.truncated) == (8, 5, 2)
    log = _llm_log(result)
    assert [e["sample"] for e in log] == list(range(8))
    errors = [e.get("error", "") for e in log]
    for sample, says in enumerate(
        ["RateLimitError", "InternalServerError", "APITimeoutError", "malformed JSON", "no choices"]
    ):
        assert says in errors[sample], (sample, errors[sample])
        assert "text" not in log[sample]
    assert all("error" not in e for e in log[5:])
    assert log[5]["finish_reason"] == "length"
    assert log[6]["clipped_chars"] == MEGABYTE - MIN_REPLY_CHARS
    assert len(log[6]["text"]) == MIN_REPLY_CHARS
    # The result on disk says the same.
    saved = json.loads((Path(result.run_dir) / "result.json").read_text())
    assert saved["usage"]["failed"] == 5 and saved["usage"]["truncated"] == 2
    # The clipped megabyte reply was scored like any other candidate, clipped.
    programs = [
        (Path(result.run_dir) / c.path).read_text() for c in result.candidates if c.path is not None
    ]
    assert any(len(p) > MIN_REPLY_CHARS // 2 for p in programs)
    assert all(len(p) <= MIN_REPLY_CHARS for p in programs)


def test_an_improver_that_catches_model_errors_completes(tmp_path: Path) -> None:
    improver = tmp_path / "patient.py"
    improver.write_text(
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    seen = []\n"
        "    while True:\n"
        "        try:\n"
        "            language_model.prompt('expert', 'improve ' + initial_solution)\n"
        "            seen.append('ok')\n"
        "        except Exception as exc:\n"
        "            seen.append(type(exc).__name__)\n"
        "            if type(exc).__name__ == 'BudgetExhausted':\n"
        "                break\n"
        "    assert seen == ['StopError'] * 4 + ['BudgetExhausted'], seen\n"
        "    return initial_solution\n"
    )
    plan = {0: [E429], 1: [MALFORMED], 2: [EMPTY_CHOICES], 3: [NO_CONTENT]}
    with FaultServer(plan, replies.MEMO) as server:
        result = improve_run(_config(tmp_path, server, improver=str(improver), model_calls=4))
        assert len(server.requests) == 3 + 1 + 1 + 1
    assert result.status == "completed", result.improver.error
    assert not result.improved
    assert (result.usage.calls, result.usage.failed) == (4, 4)
    assert all("error" in e for e in _llm_log(result))


def test_when_every_call_fails_the_seed_improver_fails_and_the_original_is_kept(tmp_path):
    with FaultServer({}, replies.MEMO, default=[E429]) as server:
        result = improve_run(_config(tmp_path, server, evaluations=5))
    assert result.status == "improver_failed" and result.improver.status == "crash"
    assert "4 of 4 samples failed" in (result.improver.error or "")
    assert "RateLimitError" in (result.improver.error or "")
    assert not result.improved and Path(result.best_path).read_text() == FIB.read_text()
    assert (result.usage.calls, result.usage.failed) == (4, 4)
    assert len(_llm_log(result)) == 4 and all("error" in e for e in _llm_log(result))


# --- the command line ------------------------------------------------------------------------


def _cli(tmp_path: Path, server: FaultServer, *extra: str):
    return run_stop(
        "improve",
        "--target",
        str(FIB),
        "--base-url",
        server.url,
        "--model",
        "faulty",
        "--samples",
        "4",
        "--budget",
        "5",
        "--json",
        "--runs-dir",
        str(tmp_path / "runs"),
        *extra,
        cwd=tmp_path,
    )


def test_cli_run_with_server_errors_then_success_completes(tmp_path: Path) -> None:
    plan = {0: [E500, E500, OK], 1: [E429, OK], 2: [MALFORMED], 3: [EMPTY_CHOICES]}
    with FaultServer(plan, replies.MEMO) as server:
        proc = _cli(tmp_path, server)
        assert [server.attempts(s) for s in range(4)] == [3, 2, 1, 1]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "completed" and out["improved"] is True
    assert out["usage"]["calls"] == 4 and out["usage"]["failed"] == 2
    log = [
        json.loads(line)
        for line in (Path(out["run_dir"]) / "llm.jsonl").read_text().split("\n")
        if line
    ]
    assert sorted(e["sample"] for e in log if "error" in e) == [2, 3]
    assert sorted(e["sample"] for e in log if "text" in e) == [0, 1]


def test_cli_run_where_every_call_fails_exits_1_without_a_traceback(tmp_path: Path) -> None:
    with FaultServer({}, replies.MEMO, default=[MALFORMED]) as server:
        proc = _cli(tmp_path, server)
    assert proc.returncode == 1, proc.stderr  # the run is saved; the improver failed
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "improver_failed"
    assert "malformed JSON" in out["improver"]["error"]
    assert out["usage"]["failed"] == 4 and out["improved"] is False
    assert Path(out["best_path"]).read_text() == FIB.read_text()


def test_a_rate_limit_is_honoured_within_its_bound() -> None:
    """A 429's Retry-After is waited out (the SDK's retry, one charge); one past the SDK's
    bound of two minutes fails the sample at once instead of holding the run for it."""
    wait = {"status": 429, "headers": {"retry-after": "1"}}
    forever = {"status": 429, "headers": {"retry-after": "3600"}}
    with FaultServer({0: [wait, OK], 1: [forever]}, replies.MEMO) as server:
        model, seen = make_model(server)
        assert model.prompt("expert", "improve this") == replies.MEMO
        assert server.attempts(0) == 2
        with pytest.raises(ModelError, match="RateLimitError"):
            model.prompt("expert", "improve this")
        assert server.attempts(1) == 1
    assert model.usage.calls == 2 and model.usage.failed == 1
