"""Samples of one prompt decoded together on the real embedded model (stop/llm/batch_decode.py),
against the sequential path (create_completion). About half a minute on 2 cores."""

from __future__ import annotations

import inspect

import pytest

from stop.errors import ModelError
from stop.llm.base import BatchFailure, Prompt
from stop.llm.batch_decode import SAMPLING_DEFAULTS

llama_cpp = pytest.importorskip("llama_cpp")

MAX_TOKENS = 24
# Programs the model tends to echo and extend, so each group's replies are recognisable
# and long enough not to end at the first token.
ASK = "Improve this program.\n\n```python\n{}\n```"
ADD = ASK.format("def add_numbers(a, b):\n    return a + b")
GREET = ASK.format("def greet_user(name):\n    print('hi', name)")
SQUARES = ASK.format("def squares(n):\n    return [i * i for i in range(n)]")
EXPERTISE = "You are an expert Python programmer."


def _prompt(message: str, sample: int, temperature: float = 0.0, max_tokens: int = MAX_TOKENS):
    return Prompt(EXPERTISE, message, temperature, max_tokens, 3, sample)


@pytest.fixture(scope="module")
def backend():
    from stop.llm.local import LocalBackend

    return LocalBackend()


def test_batch_samplers_use_create_completions_defaults():
    # The sequential path leaves these at create_completion's defaults; the batched path
    # must build the same sampler chain, or the two draw from different distributions.
    params = inspect.signature(llama_cpp.Llama.create_completion).parameters
    assert {name: params[name].default for name in SAMPLING_DEFAULTS} == SAMPLING_DEFAULTS


def test_greedy_samples_decoded_together_equal_the_sequential_path(backend):
    prompts = [_prompt(SQUARES, sample) for sample in range(4)]
    together = backend.generate(prompts)
    one_by_one = [backend.generate([p])[0] for p in prompts]
    # Greedy decoding has no seed: every sample is the same text on both paths. The
    # batched logits differ from the sequential ones in the last bits only, far below
    # the gap between this model's two best tokens on this prompt.
    assert [c.text for c in together] == [c.text for c in one_by_one]
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in one_by_one]
    assert [c.finish_reason for c in together] == [c.finish_reason for c in one_by_one]
    assert {c.prompt_tokens for c in together} == {len(backend.prompt_tokens(prompts[0]))}


def test_first_tokens_equal_the_sequential_paths_seed_for_seed(backend):
    # From a cold cache both paths read the whole prompt in one batch and get the same
    # logits bit for bit, so the first token tells whether the samplers (chain, parameters,
    # seeds) are the same. Later tokens may part (rounding, see the module's docstring).
    prompts = [Prompt(EXPERTISE, "Write a program.", 1.0, 1, 3, sample) for sample in range(8)]
    backend.generate(prompts[:2])
    backend._decoder._forget()
    together = [c.text for c in backend.generate(prompts)]
    one_by_one = []
    for prompt in prompts:
        backend.llm.reset()  # the Llama object forgets its prompt cache too
        one_by_one.append(backend.generate([prompt])[0].text)
    assert together == one_by_one
    assert len(set(together)) >= 3, "the seeds hardly matter on this prompt"


def test_sampled_batch_is_reproducible_varied_and_well_formed(backend):
    prompts = [_prompt(ADD, sample, temperature=1.0) for sample in range(4)]
    backend.generate(prompts)
    # Asked again, the prompt is found in the decoder's cache (as in the Llama object's):
    # compare two calls made in that same state.
    first = backend.generate(prompts)
    again = backend.generate(prompts)
    assert [c.text for c in first] == [c.text for c in again], "the same seeds, other texts"
    assert len({c.text for c in first}) >= 2, "four seeds gave one text"
    for c in first:
        assert c.text.startswith("```python\n") and c.text.endswith("\n```\n")
        body = c.text[len("```python\n") : -len("\n```\n")]
        assert "```" not in body, "the reply was not cut at the fence"
        assert 1 <= c.completion_tokens <= MAX_TOKENS
        # "length" exactly when the token limit ended it (the text is plain ASCII here).
        assert (c.finish_reason == "length") == (c.completion_tokens == MAX_TOKENS)
        assert c.finish_reason in {"length", "stop"}


def test_a_prompt_sharing_the_cached_start_decodes_as_from_an_empty_cache(backend):
    group = [_prompt(GREET, sample) for sample in range(2)]
    backend.generate([_prompt(ADD, sample) for sample in range(2)])
    warm = backend.generate(group)  # reads only what follows the shared expertise
    backend._decoder._forget()
    cold = backend.generate(group)  # reads the whole prompt
    assert [c.text for c in warm] == [c.text for c in cold]
    assert "greet_user" in warm[0].text


def test_a_mixed_list_comes_back_in_input_order(backend):
    prompts = [_prompt(ADD, 0), _prompt(GREET, 0), _prompt(ADD, 1), _prompt(SQUARES, 0)]
    prompts.append(_prompt(GREET, 1))
    texts = [c.text for c in backend.generate(prompts)]
    assert all("add_numbers" in texts[i] for i in (0, 2)), texts
    assert all("greet_user" in texts[i] for i in (1, 4)), texts
    assert "squares" in texts[3], texts
    # The single prompt took the sequential path: the same as asking for it alone.
    assert texts[3] == backend.generate([prompts[3]])[0].text


def test_the_sequential_path_still_works_after_a_batch(backend):
    alone = _prompt(GREET, 0, temperature=1.0)
    backend.generate([alone])
    # Asked again, the prompt is found in the Llama object's cache; at temperature > 0
    # that alone can change the sample (the logits of a re-read last token differ in the
    # last bits), so "before" and "after" must both be asked in that state.
    before = backend.generate([alone])[0]
    group = [_prompt(ADD, sample, temperature=1.0) for sample in range(3)]
    batch = [c.text for c in backend.generate(group)]
    after = backend.generate([alone])[0]
    # The batch ran in a context of its own: the Llama object's cache and state are intact.
    assert after.text == before.text and after.completion_tokens == before.completion_tokens
    # And a batch starts from an empty cache whatever the sequential path did in between.
    assert [c.text for c in backend.generate(group)] == batch


def test_a_group_larger_than_the_window_allows_goes_in_rounds():
    from stop.llm.local import LocalBackend, LocalOptions

    small = LocalBackend(LocalOptions(context_tokens=256))
    prompts = [_prompt(SQUARES, sample, max_tokens=64) for sample in range(5)]
    together = small.generate(prompts)
    # (256 - prompt) // 64 tokens leaves room for 2 or 3 sequences at once, not 5.
    assert small._decoder.capacity(len(small.prompt_tokens(prompts[0])), 64) < 5
    assert len(together) == 5
    assert len({c.text for c in together}) == 1, "greedy samples differ"
    assert together[0].text == small.generate([prompts[0]])[0].text


def test_a_failed_group_keeps_the_others(backend, monkeypatch):
    backend.generate([_prompt(ADD, 0), _prompt(ADD, 1)])  # builds the decoder

    def broken(*args, **kwargs):
        raise ModelError("llama_decode failed with status -1 on 2 rows")

    monkeypatch.setattr(backend._decoder, "sample", broken)
    with pytest.raises(BatchFailure) as failure:
        backend.generate([_prompt(ADD, 0), _prompt(SQUARES, 0), _prompt(ADD, 1)])
    first, single, second = failure.value.results
    assert isinstance(first, ModelError) and isinstance(second, ModelError)
    assert not isinstance(single, ModelError) and "squares" in single.text
