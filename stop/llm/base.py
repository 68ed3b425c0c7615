"""The one small protocol every language-model backend implements, and its records."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from stop.errors import ModelError


@dataclass(frozen=True)
class Prompt:
    """One sample to draw: everything that determines the response, the cache key included."""

    expertise: str  # the system message
    message: str  # the user message
    temperature: float
    max_tokens: int
    seed: int
    sample: int  # which sample of this exact prompt in this run (0, 1, ...)


def derive_seed(seed: int, *path: int | str) -> int:
    """The seed of one part of a run (a self-improvement round, a meta-utility test), the
    same in every run of `seed` and distinct from every other part's: a hash, where sums
    of multiples (seed * 1000 + 500 + round) collide once a count passes the gap."""
    material = repr((seed, *path)).encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big") >> 1  # 63 bits


def sample_seed(prompt: Prompt) -> int:
    """The seed a backend samples with: distinct for the samples of one prompt, the same
    in every run, and 31 bits, which every server and sampler takes."""
    return (prompt.seed * 1000 + prompt.sample) & 0x7FFF_FFFF


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False
    finish_reason: str | None = None  # as the server gave it; "length": cut at max_tokens
    clipped_chars: int = 0  # characters past the host's reply cap, dropped (LanguageModel)


class BatchFailure(ModelError):
    """Some (perhaps all) samples of a batch failed. `results` holds, in the prompts' order,
    each sample's Completion or its ModelError, so the samples that came back are not lost."""

    def __init__(self, results: list[Completion | ModelError]) -> None:
        self.results = results
        failed = [r for r in results if isinstance(r, ModelError)]
        first = failed[0] if failed else "-"
        super().__init__(f"{len(failed)} of {len(results)} samples failed; the first: {first}")


class Backend(Protocol):
    """A source of completions. `id` names all that determines them besides the prompt.

    Optional attributes, read with defaults: `concurrency` (requests it answers at once,
    default 1), `batches` (True where a generate of n prompts costs far less than n
    calls, as batched decoding does; default False) and `shares_cores` (True where it
    computes on this machine's cores, as the embedded model does; default False)."""

    id: str

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        """One completion per prompt, in order; raise stop.errors.ModelError on failure,
        or BatchFailure to hand back the samples that succeeded with the others' errors."""
        ...
