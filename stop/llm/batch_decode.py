"""Several samples of one prompt decoded together in llama.cpp multi-sequence batches.

The prompt is evaluated once, in sequence 0, and its KV cells are shared with the other
sequences; then every step is one llama_decode holding the next token of each sequence
still running. On a CPU one row costs about as much as reading all the weights, so eight
rows cost far less than eight single-row steps.

Parity with the sequential path (Llama.create_completion): each sequence's sampler is
built by the code create_completion uses, with its default parameters and the same seed,
and each sequence stops by create_completion's rules (end of text, the stop string, the
token limit). The logits differ from the sequential path's by rounding only (other matrix
shapes), as much as that path's own differ between a warm and a cold prompt cache: a
sampled sequence can take another, equally likely, path (docs/batched-sampling.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from stop.errors import ModelError

log = logging.getLogger(__name__)

# Llama.create_completion's sampling defaults (llama-cpp-python 0.3.36), which the
# sequential path uses; tests/test_local_batch.py checks them against its signature.
SAMPLING_DEFAULTS = {
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "typical_p": 1.0,
    "repeat_penalty": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
}
# Sequences decoded together at most; a larger group goes in several rounds.
MAX_SEQUENCES = 16
_UTF8_SLACK = 3  # tokens a sequence may run past its limit (see _utf8_wait)


@dataclass(frozen=True)
class Draw:
    """One sample: the text before the stop string, as create_completion returns it."""

    text: str
    completion_tokens: int
    finish_reason: str  # "stop": end of text or the stop string; "length": the token limit


@dataclass
class _Sequence:
    sampler: Any  # llama_cpp._internals.LlamaSampler
    tokens: list[int] = field(default_factory=list)
    text: bytes = b""
    utf8_wait: int = 0  # tokens to wait for a split UTF-8 character (create_completion's rule)
    finish_reason: str | None = None


class BatchDecoder:
    """A second llama context on the same weights, with room for MAX_SEQUENCES sequences.

    A context of its own leaves the Llama object's context, and its prompt cache,
    untouched. It costs one more KV cache (about 80 MiB at 4096 tokens for Gemma 3 270M).
    """

    def __init__(self, llm: Any) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._llama_cpp = llama_cpp
        self._llm = llm
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max = MAX_SEQUENCES
        # Unified: all sequences share one pool of n_ctx cells, so the prompt's cells are
        # shared, not copied, and each sequence may grow to the whole window.
        params.kv_unified = True
        # Registered on the model, so the context is freed before the weights it uses.
        self._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx.ctx)
        self._n_batch = llm.n_batch
        self._batch = _internals.LlamaBatch(
            n_tokens=max(self._n_batch, MAX_SEQUENCES), embd=0, n_seq_max=1, verbose=False
        )
        # The last prompt, whose cells sequence 0 keeps: like the Llama object's own cache,
        # a prompt asked again (or sharing its start, the expertise) is not read again.
        self._cached: list[int] = []

    def capacity(self, prompt_tokens: int, max_tokens: int) -> int:
        """How many sequences fit at once: the prompt's cells once, then each its answer's
        (plus _UTF8_SLACK: waiting for a split character can run past the token limit)."""
        per_sequence = max(1, max_tokens) + _UTF8_SLACK
        return max(1, min(MAX_SEQUENCES, (self.n_ctx - prompt_tokens) // per_sequence))

    def sample(
        self, tokens: list[int], seeds: list[int], temperature: float, max_tokens: int, stop: str
    ) -> list[Draw]:
        """One Draw per seed, in order; at most capacity(len(tokens), max_tokens) seeds."""
        if not 0 < len(seeds) <= self.capacity(len(tokens), max_tokens):
            raise ValueError(f"{len(seeds)} sequences do not fit one batch")
        if len(tokens) >= self.n_ctx:
            raise ModelError(f"{len(tokens)} prompt tokens exceed the {self.n_ctx}-token window")
        # create_completion's limit: what fits after the prompt, or what the caller asked.
        limit = self.n_ctx - len(tokens)
        if max_tokens > 0:
            limit = min(limit, max_tokens)
        sequences = [_Sequence(sampler=self._sampler(seed, temperature)) for seed in seeds]
        kept = self._reuse(tokens)
        log.debug("%d sequences, %d of %d prompt tokens cached", len(seeds), kept, len(tokens))
        try:
            draws = self._run(tokens, kept, sequences, limit, stop.encode())
        except BaseException:
            self._forget()  # cells in an unknown state: start the next call afresh
            raise
        self._keep_prompt(tokens, len(sequences))
        return draws

    def _reuse(self, tokens: list[int]) -> int:
        """How many leading prompt tokens sequence 0 still holds from the last call; the
        cells after them go. The last token is always read again: its logits start all."""
        kept = 0
        for cached, token in zip(self._cached, tokens[:-1], strict=False):
            if cached != token:
                break
            kept += 1
        if kept == 0 or not self._llama_cpp.llama_memory_seq_rm(self._memory, 0, kept, -1):
            self._forget()
            return 0
        return kept

    def _keep_prompt(self, tokens: list[int], n_sequences: int) -> None:
        # The answers' cells go, the prompt's stay (in sequence 0 only).
        for seq_id in range(1, n_sequences):
            self._llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        if self._llama_cpp.llama_memory_seq_rm(self._memory, 0, len(tokens), -1):
            self._cached = list(tokens)
        else:
            self._forget()

    def _forget(self) -> None:
        self._llama_cpp.llama_memory_clear(self._memory, True)
        self._cached = []

    def _sampler(self, seed: int, temperature: float) -> Any:
        # The very chain create_completion builds (Llama._init_sampler reads the seed from
        # the Llama object); every call of the sequential path sets the seed again.
        self._llm.set_seed(seed)
        return self._llm._init_sampler(temp=temperature, **SAMPLING_DEFAULTS)

    def _run(
        self, prompt: list[int], kept: int, sequences: list[_Sequence], limit: int, stop: bytes
    ) -> list[Draw]:
        for start in range(kept, len(prompt), self._n_batch):
            chunk = prompt[start : start + self._n_batch]
            last = start + len(chunk) == len(prompt)
            rows = [(t, start + i, 0, last and i == len(chunk) - 1) for i, t in enumerate(chunk)]
            self._decode(rows)
        for seq_id in range(1, len(sequences)):
            self._llama_cpp.llama_memory_seq_cp(self._memory, 0, seq_id, -1, -1)
        # The batch row whose logits each running sequence samples from next.
        rows_of = {seq_id: len(rows) - 1 for seq_id in range(len(sequences))}
        while rows_of:
            step = []
            for seq_id, row in rows_of.items():
                seq = sequences[seq_id]
                token = seq.sampler.sample(self._ctx, row)
                if self._advance(seq, token, stop, limit) is None:
                    step.append((token, len(prompt) + len(seq.tokens) - 1, seq_id, True))
            if not step:
                break
            self._decode(step)
            rows_of = {seq_id: row for row, (_, _, seq_id, _) in enumerate(step)}
        return [
            Draw(s.text.decode("utf-8", errors="ignore"), len(s.tokens), s.finish_reason or "")
            for s in sequences
        ]

    def _advance(self, seq: _Sequence, token: int, stop: bytes, limit: int) -> str | None:
        """create_completion's per-token rules; returns the finish reason once done."""
        if self._llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token):
            seq.finish_reason = "stop"
            return seq.finish_reason
        seq.tokens.append(token)
        if seq.tokens[0] == self._llm.token_bos():
            # detokenize drops the space after a leading BOS; only the whole text shows it.
            seq.text = self._llm.detokenize(seq.tokens)
        else:
            seq.text += self._llm.detokenize([token])  # pieces add up; no quadratic redo
        if _utf8_wait(seq):
            return None
        if stop in seq.text:
            seq.text = seq.text[: seq.text.index(stop)]
            seq.finish_reason = "stop"
        elif len(seq.tokens) >= limit:
            seq.finish_reason = "length"
        return seq.finish_reason

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) rows."""
        batch = self._batch.batch
        batch.n_tokens = len(rows)
        for i, (token, pos, seq_id, logits) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = logits
        status = self._llama_cpp.llama_decode(self._ctx.ctx, batch)
        if status != 0:
            raise ModelError(f"llama_decode failed with status {status} on {len(rows)} rows")


def _utf8_wait(seq: _Sequence) -> bool:
    """create_completion's guard, kept as it is (quirks included) so that the two paths
    stop alike: after the lead byte of a split UTF-8 character, skip the stop and length
    checks for as many tokens as the character still lacks."""
    for k, char in enumerate(seq.text[-3:]):
        k = 3 - k
        for num, pattern in ((2, 192), (3, 224), (4, 240)):
            if num > k and pattern & char == pattern:
                seq.utf8_wait = num - k
    if seq.utf8_wait > 0:
        seq.utf8_wait -= 1
        return True
    return False
