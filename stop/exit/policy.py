"""Policy and value from one model (section 2.2, equations 1-2).

u(a) sums, over the bytes t_k of code unit a (with its closing space), the model's score
of t_k after [prompt, e(P), "O:9 A:", t_0..t_k-1]; p(a) = softmax over the allowed units.
`score="logits"` sums raw logits, literally equation 1; the default `score="logprob"`
sums log-softmax values instead, i.e. u(a) = log P_LM(a | context), so that p(a) is the
language model's own distribution restricted to the allowed units. (Raw logits carry a
free offset per position; with units of different lengths and contexts their sum is not
comparable across units, which we found slows learning.) For single-byte units the two
agree.

All units are scored in one forward: the bytes of every unit form a trie, each trie node
is one extra query that attends to the context and to its own ancestors (a tree mask),
and the context itself comes from a key/value cache (sampling) or is part of the same call
(MCTS). The value is the expectation of the outcome distribution predicted at the
outcome slot under section 2.1's reward (digit d -> d/9, T -> -2, S and R -> -1).

At search time the outcome slot is filled with "9", the best outcome: the policy is read
conditioned on success (the training sequences carry each trajectory's real outcome
there, so this is what the model learns to associate with good actions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stop.errors import BadInput
from stop.exit.model import Decoder, forward_flops
from stop.exit.tokens import BEST_OUTCOME, OUTCOME_CHARS, OUTCOME_VALUE, PAD, Units, step_head

HEAD = step_head(BEST_OUTCOME)  # "O:9 A:"
# The outcome slot's predictor is the ":" after "O", this many tokens before a chunk's end.
OUTCOME_FROM_END = len(HEAD) - 2


@dataclass
class Cache:
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    valid: torch.Tensor  # [B, T] bool: padding slots are never attended
    length: torch.Tensor  # [B] real tokens so far = the next position

    def select(self, rows: torch.Tensor) -> Cache:
        kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.kv]
        return Cache(kv, self.valid.index_select(0, rows), self.length.index_select(0, rows))


@dataclass
class Scored:
    scores: torch.Tensor  # [B, C] u(a) of equation 1, every unit (mask before use)
    values: torch.Tensor  # [B] predicted value at the outcome slot
    cache: Cache | None
    flops: int


class Scorer:
    """Equation 1 for every unit, batched, plus the value, from one forward per call."""

    def __init__(self, model: Decoder, units: Units, score: str = "logprob") -> None:
        if score not in ("logprob", "logits"):
            raise BadInput(f"policy score must be logprob or logits, got {score!r}")
        self.model, self.units, self.score = model, units, score
        self.device = next(model.parameters()).device
        self._tries: dict[tuple[int, ...] | None, dict[str, torch.Tensor]] = {}
        self.outcome_bytes = torch.tensor([ord(c) for c in OUTCOME_CHARS], device=self.device)
        values = [OUTCOME_VALUE[c] for c in OUTCOME_CHARS]
        self.outcome_values = torch.tensor(values, device=self.device)

    def _trie(self, subset: tuple[int, ...] | None) -> dict[str, torch.Tensor]:
        if subset not in self._tries:
            trie = self.units.trie(subset)
            arrays = {
                "units": np.array(trie.units),
                "bytes": np.array(trie.node_bytes),
                "depth": np.array(trie.node_depth),
                "ancestors": trie.ancestors,
                "src": trie.path_src,
                "byte": trie.path_byte,
                "valid": trie.path_valid,
            }
            self._tries[subset] = {
                k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()
            }
        return self._tries[subset]

    @torch.inference_mode()
    def __call__(
        self,
        chunks: list[list[int]],
        cache: Cache | None = None,
        subset: tuple[int, ...] | None = None,
    ) -> Scored:
        """Append each row's chunk (which must end with HEAD) to its context and score the
        units in `subset` (all by default; the others get -inf)."""
        b, device = len(chunks), self.device
        trie = self._trie(subset)
        lengths = np.array([len(c) for c in chunks])
        width, n_nodes = int(lengths.max()), len(trie["bytes"])
        array = np.full((b, width), PAD, np.int64)
        for row, chunk in enumerate(chunks):
            array[row, : len(chunk)] = chunk
        n_real = torch.from_numpy(lengths).to(device)
        tokens = torch.cat((torch.from_numpy(array).to(device), trie["bytes"].expand(b, -1)), 1)
        base = (
            cache.length if cache is not None else torch.zeros(b, dtype=torch.long, device=device)
        )
        steps = torch.arange(width, device=device)
        positions = torch.cat((base[:, None] + steps, (base + n_real)[:, None] + trie["depth"]), 1)
        past = 0 if cache is None else cache.valid.shape[1]
        q_len = width + n_nodes
        mask = torch.zeros(b, q_len, past + q_len, dtype=torch.bool, device=device)
        if cache is not None:
            mask[:, :, :past] = cache.valid[:, None, :]
        chunk_valid = steps[None, :] < n_real[:, None]  # [B, width]
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask[:, :width, past : past + width] = causal & chunk_valid[:, None, :]
        mask[:, width:, past : past + width] = chunk_valid[:, None, :]
        mask[:, width:, past + width :] = trie["ancestors"]
        diagonal = torch.arange(q_len, device=device)
        mask[:, diagonal, past + diagonal] = True  # padding queries attend to themselves
        # logits wanted: the outcome slot, the context's last position, every trie node
        select = torch.cat(
            (
                torch.stack((n_real - 1 - OUTCOME_FROM_END, n_real - 1), 1),
                width + torch.arange(n_nodes, device=device).expand(b, -1),
            ),
            1,
        )
        past_kv = None if cache is None else cache.kv
        logits, kvs = self.model(tokens, positions, mask, past_kv, select)
        logits = logits.float()
        values = logits[:, 0, self.outcome_bytes].softmax(-1) @ self.outcome_values
        table = logits[:, 1:].log_softmax(-1) if self.score == "logprob" else logits[:, 1:]
        picked = table[:, trie["src"], trie["byte"]]  # [B, U, L]; source 0: the context
        scores = torch.full((b, self.units.size), float("-inf"), device=device)
        scores[:, trie["units"]] = (picked * trie["valid"]).sum(-1)
        if cache is None:
            new_kv = [(k[:, :, :width], v[:, :, :width]) for k, v in kvs]
            valid = chunk_valid
        else:
            new_kv = [
                (torch.cat((pk, k[:, :, :width]), 2), torch.cat((pv, v[:, :, :width]), 2))
                for (k, v), (pk, pv) in zip(kvs, cache.kv, strict=True)
            ]
            valid = torch.cat((cache.valid, chunk_valid), 1)
        flops = forward_flops(self.model.config, b * q_len, b * q_len * (past + q_len))
        return Scored(scores, values, Cache(new_kv, valid, base + n_real), flops)


def policy(scores: torch.Tensor, allowed: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Equation 2: softmax of u over the allowed units (probability 0 elsewhere)."""
    masked = scores.masked_fill(~allowed, float("-inf"))
    return (masked / max(temperature, 1e-6)).softmax(-1)
