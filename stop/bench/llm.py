"""The embedded model: stop's LocalBackend against llama-cpp-python called directly, and
eight samples of one prompt decoded together against eight calls one after the other.

Both sides of each figure run in this process on one loaded model, alternating, and each
keeps its best of REPEATS runs, so that a busy moment of a shared machine does not land
on one side only. Everything is sampled at temperature 0.7 from fixed seeds.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, cast

from stop.bench import Figure, figure
from stop.errors import StopError
from stop.llm.base import Prompt

if TYPE_CHECKING:
    from llama_cpp.llama_types import CreateCompletionResponse

log = logging.getLogger(__name__)

REPEATS = 2
SAMPLES = 8
MAX_TOKENS = 48  # short replies keep the suite near a minute on 2 cores
# A program long enough that the model keeps writing rather than closing the fence at once.
_MESSAGE = """Improve this program.

```python
def primes(limit):
    found = []
    for n in range(2, limit):
        if all(n % d for d in range(2, n)):
            found.append(n)
    return found
```"""
_EXPERTISE = "You are an expert Python programmer."


def _prompt(sample: int) -> Prompt:
    return Prompt(_EXPERTISE, _MESSAGE, 0.7, MAX_TOKENS, 7, sample)


def bench_llm() -> list[Figure]:
    from stop.llm.base import sample_seed
    from stop.llm.local import LocalBackend

    backend = LocalBackend()
    llm = backend.llm
    one = _prompt(0)
    tokens = backend.prompt_tokens(one)
    # Warm both paths: the prompt cache of the Llama object, the batch decoder's context.
    backend.generate([one])
    backend.generate([_prompt(0), _prompt(1)])

    def direct() -> int:
        result = cast(  # not streamed: one response, not an iterator of them
            "CreateCompletionResponse",
            llm.create_completion(
                tokens, max_tokens=MAX_TOKENS, temperature=0.7, seed=sample_seed(one), stop=["```"]
            ),
        )
        return result["usage"]["completion_tokens"]

    def through_stop() -> int:
        return backend.generate([one])[0].completion_tokens

    samples = [_prompt(i) for i in range(SAMPLES)]

    def sequential() -> int:
        return sum(backend.generate([p])[0].completion_tokens for p in samples)

    def batched() -> int:
        return sum(c.completion_tokens for c in backend.generate(samples))

    rate = _alternate({"direct": direct, "stop": through_stop}, per_token=True)
    wall = _alternate({"sequential": sequential, "batched": batched}, per_token=False)
    return [
        figure("llm-tokens-per-s", rate["direct"], rate["stop"], "tokens/s", True),
        figure(f"llm-batch-{SAMPLES}", wall["sequential"], wall["batched"], "s", False),
    ]


def _alternate(sides: dict, per_token: bool) -> dict[str, float]:
    """Best of REPEATS per side, the sides taking turns: tokens/s, or wall seconds."""
    best: dict[str, float] = {}
    for repeat in range(REPEATS):
        for name, run in sides.items():
            started = time.perf_counter()
            produced = run()
            seconds = time.perf_counter() - started
            if produced <= 0:
                raise StopError(f"the llm benchmark's {name} side produced no tokens")
            log.info(
                "llm bench %s, run %d: %d tokens in %.2f s (%.1f tokens/s)",
                name,
                repeat,
                produced,
                seconds,
                produced / seconds,
            )
            if per_token:
                best[name] = max(best.get(name, 0.0), produced / seconds)
            else:
                best[name] = min(best.get(name, float("inf")), seconds)
    return best
