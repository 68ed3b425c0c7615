"""The language-model layer: backend registry, scripted backend, budgets, samples, cache."""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stop.errors import BadInput, BudgetExhausted, StopError
from stop.llm import Completion, ModelSettings, Prompt, backend_names, build_backend
from stop.llm.cache import ResponseCache, cache_key
from stop.llm.model import LanguageModel
from stop.llm.tokens import count_tokens

REPLIES = ["reply zero", "reply one", "reply two", "reply three", "reply four"]


def write_script(path: Path, replies: object) -> Path:
    path.write_text(json.dumps(replies))
    return path


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_script(tmp_path / "script.json", REPLIES)


def scripted(script_path: Path):
    return build_backend(ModelSettings(backend="scripted", script=script_path))


def make_model(backend, **overrides) -> LanguageModel:
    options = {"max_responses_per_call": 4, "max_tokens": 64, "budget_calls": 100}
    options.update(overrides)
    return LanguageModel(backend, **options)


# --- registry and scripted backend -------------------------------------------------------


def test_build_scripted_backend_from_settings(script: Path) -> None:
    backend = scripted(script)
    assert backend.id.startswith("scripted:script.json:")
    assert backend.prompts == []
    prompt = Prompt("be brief", "say hi", 0.5, 16, 0, 0)
    completions = backend.generate([prompt, prompt])
    assert [c.text for c in completions] == REPLIES[:2]
    assert all(isinstance(c, Completion) and not c.cached for c in completions)
    # prompt tokens are words in expertise + message; completion tokens words in the reply
    assert [(c.prompt_tokens, c.completion_tokens) for c in completions] == [(4, 2), (4, 2)]
    assert backend.prompts == [prompt, prompt]


def test_scripted_replies_cycle(tmp_path: Path) -> None:
    backend = scripted(write_script(tmp_path / "two.json", ["a", "b"]))
    prompt = Prompt("", "m", 0.0, 8, 0, 0)
    assert [c.text for c in backend.generate([prompt] * 5)] == ["a", "b", "a", "b", "a"]


def test_scripted_id_depends_on_script_content(tmp_path: Path) -> None:
    first = scripted(write_script(tmp_path / "s.json", ["a"])).id
    same = scripted(write_script(tmp_path / "s.json", ["a"])).id
    other = scripted(write_script(tmp_path / "s.json", ["b"])).id
    assert first == same
    assert first != other


def test_unknown_backend_lists_the_names() -> None:
    with pytest.raises(BadInput) as info:
        build_backend(ModelSettings(backend="no-such-backend"))
    message = str(info.value)
    assert "no-such-backend" in message
    assert {"local", "openai", "scripted"} <= set(backend_names())
    for name in backend_names():
        assert name in message


def test_scripted_without_script_is_bad_input() -> None:
    with pytest.raises(BadInput, match="script"):
        build_backend(ModelSettings(backend="scripted"))


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"replies": ["a"]}),
        json.dumps("just a string"),
        json.dumps(["a", 1]),
        json.dumps([]),
        "not json at all [",
    ],
    ids=["object", "string", "non-string-item", "empty-list", "invalid-json"],
)
def test_scripted_with_bad_script_is_bad_input(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BadInput):
        build_backend(ModelSettings(backend="scripted", script=path))


def test_scripted_with_missing_script_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        build_backend(ModelSettings(backend="scripted", script=tmp_path / "missing.json"))


# --- LanguageModel: replies, prompts, samples ----------------------------------------------


def test_batch_prompt_returns_replies_in_order_and_records_prompts(script: Path) -> None:
    backend = scripted(script)
    model = make_model(backend, max_tokens=77, seed=5)
    replies = model.batch_prompt("you are terse", ["one", "two", "three"], temperature=0.3)
    assert replies == REPLIES[:3]
    assert [p.message for p in backend.prompts] == ["one", "two", "three"]
    for prompt in backend.prompts:
        assert prompt.expertise == "you are terse"
        assert prompt.temperature == 0.3
        assert prompt.max_tokens == 77
        assert prompt.seed == 5
    assert model.prompt("you are terse", "four") == REPLIES[3]
    assert backend.prompts[-1].message == "four"
    assert model.usage.calls == 4


def test_identical_messages_get_increasing_sample_indices(script: Path) -> None:
    backend = scripted(script)
    model = make_model(backend)
    model.batch_prompt("e", ["same", "same", "same"])
    assert [p.sample for p in backend.prompts] == [0, 1, 2]
    model.batch_prompt("e", ["same", "other", "same"])
    assert [(p.message, p.sample) for p in backend.prompts[3:]] == [
        ("same", 3),
        ("other", 0),
        ("same", 4),
    ]


def test_sample_indices_are_counted_per_expertise_and_temperature(script: Path) -> None:
    backend = scripted(script)
    model = make_model(backend)
    model.prompt("e", "m", temperature=0.7)
    model.prompt("e", "m", temperature=0.2)
    model.prompt("f", "m", temperature=0.7)
    model.prompt("e", "m", temperature=0.7)
    assert [p.sample for p in backend.prompts] == [0, 0, 0, 1]


def test_empty_batch_costs_nothing(script: Path) -> None:
    backend = scripted(script)
    model = make_model(backend, budget_calls=1)
    assert model.batch_prompt("e", []) == []
    assert backend.prompts == []
    assert model.budget == 1


# --- budgets -------------------------------------------------------------------------------


def test_call_budget_is_enforced(script: Path) -> None:
    backend = scripted(script)
    model = make_model(backend, max_responses_per_call=3, budget_calls=5)
    assert model.budget == 5
    model.batch_prompt("e", ["a", "b", "c"])
    assert model.budget == 2
    with pytest.raises(BudgetExhausted):
        model.batch_prompt("e", ["d", "e", "f"])
    # a refused batch spends nothing and reaches no backend
    assert model.budget == 2
    assert len(backend.prompts) == 3
    model.batch_prompt("e", ["d", "e"])
    assert model.budget == 0
    with pytest.raises(BudgetExhausted):
        model.prompt("e", "one more")
    assert len(backend.prompts) == 5
    assert model.usage.calls == 5


def test_more_than_max_responses_per_call_is_refused(script: Path) -> None:
    backend = scripted(script)
    model = make_model(backend, max_responses_per_call=2, budget_calls=100)
    with pytest.raises(StopError, match="the most is 2") as info:
        model.batch_prompt("e", ["a", "b", "c"])
    assert not isinstance(info.value, BudgetExhausted)
    assert model.budget == 100
    assert backend.prompts == []
    assert model.batch_prompt("e", ["a", "b"]) == REPLIES[:2]


def test_token_budget_is_enforced(script: Path) -> None:
    backend = scripted(script)
    # each exchange: 2 prompt words ("e", "m") + 2 reply words = 4 tokens
    model = make_model(backend, budget_tokens=8)
    model.prompt("e", "m")
    assert model.usage.tokens == 4
    model.prompt("e", "m")  # 4 < 8: still allowed
    assert model.usage.tokens == 8
    assert (model.usage.prompt_tokens, model.usage.completion_tokens) == (4, 4)
    with pytest.raises(BudgetExhausted, match="token"):
        model.prompt("e", "m")
    with pytest.raises(BudgetExhausted):
        model.batch_prompt("e", ["m", "n"])
    assert model.usage.calls == 2
    assert len(backend.prompts) == 2


def test_no_token_budget_means_unlimited_tokens(script: Path) -> None:
    model = make_model(scripted(script), budget_tokens=None, budget_calls=20)
    for _ in range(20):
        model.prompt("many words in the expertise", "and many in the message too")
    assert model.usage.tokens > 100
    assert model.budget == 0


def test_concurrent_calls_never_exceed_the_call_budget(script: Path) -> None:
    backend = scripted(script)
    model = make_model(backend, max_responses_per_call=2, budget_calls=10)
    start = threading.Barrier(8, timeout=10)

    def call(index: int) -> str:
        if index < 8:  # the first eight start together, to contend for the lock
            start.wait()
        try:
            model.batch_prompt("e", ["same", "same"])
        except BudgetExhausted:
            return "exhausted"
        return "ok"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(call, range(24)))
    assert outcomes.count("ok") == 5
    assert outcomes.count("exhausted") == 19
    assert model.usage.calls == 10
    assert model.budget == 0
    assert len(backend.prompts) == 10
    # the sample counter is shared safely too: every index handed out once
    assert sorted(p.sample for p in backend.prompts) == list(range(10))


# --- cache ---------------------------------------------------------------------------------


def test_cache_replays_responses_for_a_new_model(script: Path, tmp_path: Path) -> None:
    db = tmp_path / "cache" / "responses.sqlite"
    first_cache = ResponseCache(db)
    first_backend = scripted(script)
    first = make_model(first_backend, cache=first_cache)
    assert first.prompt("e", "warm-up") == REPLIES[0]
    assert first.batch_prompt("e", ["a", "b", "a"]) == REPLIES[1:4]
    assert first.usage.cached == 0
    first_cache.close()

    exchanges: list[tuple[Prompt, Completion]] = []
    second_cache = ResponseCache(db)
    second_backend = scripted(script)
    assert second_backend.id == first_backend.id
    second = make_model(
        second_backend,
        cache=second_cache,
        on_exchange=lambda p, c: exchanges.append((p, c)),
    )
    # a fresh backend would answer REPLIES[0:3]; the cache answers what the first run got
    assert second.batch_prompt("e", ["a", "b", "a"]) == REPLIES[1:4]
    assert second_backend.prompts == []
    assert [c.cached for _, c in exchanges] == [True, True, True]
    assert [(p.message, p.sample) for p, _ in exchanges] == [("a", 0), ("b", 0), ("a", 1)]
    assert second.usage.cached == 3
    assert second.usage.calls == 3  # cached completions still count against the budget
    assert second.usage.tokens == 3 * (2 + 2)

    # a third sample of "a" was never drawn: it goes to the backend, and only it does
    assert second.batch_prompt("e", ["a", "warm-up"]) == [REPLIES[0], REPLIES[0]]
    assert [(p.message, p.sample) for p in second_backend.prompts] == [("a", 2)]
    assert [c.cached for _, c in exchanges[3:]] == [False, True]
    assert second.usage.cached == 4
    second_cache.close()


def test_cache_misses_for_a_different_seed(script: Path, tmp_path: Path) -> None:
    db = tmp_path / "responses.sqlite"
    cache = ResponseCache(db)
    make_model(scripted(script), cache=cache, seed=0).batch_prompt("e", ["a", "b"])

    backend = scripted(script)
    exchanges: list[Completion] = []
    other = make_model(backend, cache=cache, seed=1, on_exchange=lambda p, c: exchanges.append(c))
    assert other.batch_prompt("e", ["a", "b"]) == REPLIES[:2]
    assert [p.seed for p in backend.prompts] == [1, 1]
    assert [c.cached for c in exchanges] == [False, False]
    assert other.usage.cached == 0
    cache.close()


def test_cache_misses_for_a_different_script(script: Path, tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite")
    make_model(scripted(script), cache=cache).prompt("e", "a")
    backend = scripted(write_script(tmp_path / "script.json", ["changed"]))
    assert make_model(backend, cache=cache).prompt("e", "a") == "changed"
    assert len(backend.prompts) == 1
    cache.close()


def test_cache_key_covers_everything_that_determines_a_response() -> None:
    base = Prompt("expertise", "message", 0.7, 64, 0, 0)
    key = cache_key("backend-a", base)
    assert key == cache_key("backend-a", Prompt("expertise", "message", 0.7, 64, 0, 0))
    variants = [
        cache_key("backend-b", base),
        cache_key("backend-a", dataclasses.replace(base, temperature=0.2)),
        cache_key("backend-a", dataclasses.replace(base, sample=1)),
        cache_key("backend-a", dataclasses.replace(base, seed=1)),
        cache_key("backend-a", dataclasses.replace(base, max_tokens=65)),
        cache_key("backend-a", dataclasses.replace(base, message="other")),
        cache_key("backend-a", dataclasses.replace(base, expertise="other")),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_response_cache_round_trip(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "deep" / "dir" / "c.sqlite")
    assert cache.get("k") is None
    cache.put("k", Completion(text="t", prompt_tokens=1, completion_tokens=2, cached=True))
    got = cache.get("k")
    assert got == Completion(text="t", prompt_tokens=1, completion_tokens=2, cached=True)
    cache.put("k", Completion(text="u", prompt_tokens=3, completion_tokens=4))
    assert cache.get("k").text == "u"
    cache.close()


# --- on_exchange and tokens ----------------------------------------------------------------


def test_on_exchange_called_once_per_completion(script: Path) -> None:
    backend = scripted(script)
    exchanges: list[tuple[Prompt, Completion]] = []
    model = make_model(backend, on_exchange=lambda p, c: exchanges.append((p, c)))
    replies = model.batch_prompt("e", ["a", "b", "a"])
    assert len(exchanges) == 3
    assert [p for p, _ in exchanges] == backend.prompts
    assert [c.text for _, c in exchanges] == replies
    model.prompt("e", "c")
    assert len(exchanges) == 4
    with pytest.raises(StopError):
        model.batch_prompt("e", ["x"] * 5)
    assert len(exchanges) == 4


def test_count_tokens() -> None:
    for text in ["x", "hello world", "def f(x):\n    return x * 2\n", "ünïcödé ✓"]:
        count = count_tokens(text)
        assert isinstance(count, int)
        assert count > 0
    assert count_tokens("") == 0
    assert count_tokens("word " * 400) > count_tokens("word")


def test_the_encoding_loads_once_while_a_model_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model starts the load in the background; a count asked meanwhile waits for that
    load rather than starting another (on a machine without network each one is a failed
    download)."""
    import tiktoken

    from stop.llm import tokens

    loads: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def slow_load(name: str) -> object:
        loads.append(name)
        started.set()
        release.wait(5)
        raise OSError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", slow_load)
    tokens._load.cache_clear()
    try:
        tokens.warm()
        assert started.wait(5)
        counted: list[int] = []
        counter = threading.Thread(target=lambda: counted.append(count_tokens("abcdefgh")))
        counter.start()
        release.set()
        counter.join(5)
        assert counted == [2]  # the estimate: four bytes a token
        assert loads == ["o200k_base"]
    finally:
        tokens._load.cache_clear()  # the next test loads the real encoding again


def test_derived_seeds_are_stable_and_never_collide():
    """A round's seed and a meta-utility test's are each the same in every run of one
    seed and distinct from all the others (seed * 1000 + 500 + round collided with test
    500 + round), and so are the samples' below them."""
    from stop.llm.base import Prompt, derive_seed, sample_seed

    seeds = [derive_seed(0, "round", r) for r in range(2000)]
    seeds += [derive_seed(0, "meta-test", i) for i in range(20_000)]
    assert len(set(seeds)) == len(seeds)
    assert derive_seed(0, "round", 3) == derive_seed(0, "round", 3) != derive_seed(1, "round", 3)
    samples = {sample_seed(Prompt("e", "m", 0.7, 8, seeds[0], s)) for s in range(1000)}
    assert len(samples) == 1000 and all(0 <= s < 2**31 for s in samples)
