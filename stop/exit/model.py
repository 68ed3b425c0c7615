"""A Llama-2-style byte-level decoder (RMSNorm, rotary embeddings, SwiGLU) and its FLOPs.

Presets: `paper` is section 3.1's model (hidden 256, 4 heads, 4 layers, about 3.6M
parameters); `cpu` (hidden 128, 4 heads, 2 layers, about 0.5M) is the default on a machine
without a GPU, where it learns Add-N in minutes; `tiny` is for tests.

One forward serves training (causal, `is_causal` fast path) and search (an explicit
boolean mask over a key/value cache plus new tokens, with per-row positions), so that the
policy over all code units is one batched call (see policy.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from stop.errors import BadInput
from stop.exit.tokens import VOCAB


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int
    heads: int
    layers: int
    ffn: int  # SwiGLU inner width
    vocab: int = VOCAB
    rope_base: float = 10_000.0


PRESETS = {
    "tiny": ModelConfig(hidden=32, heads=2, layers=1, ffn=96),
    "cpu": ModelConfig(hidden=128, heads=4, layers=2, ffn=384),
    "paper": ModelConfig(hidden=256, heads=4, layers=4, ffn=768),  # ~3.6M parameters
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise BadInput(f"unknown model preset {name!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[name]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# (k, v) per layer, each [B, heads, T, head_dim]
KV = list[tuple[torch.Tensor, torch.Tensor]]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.attn_norm = nn.RMSNorm(config.hidden)
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden, bias=False)
        self.out = nn.Linear(config.hidden, config.hidden, bias=False)
        self.ffn_norm = nn.RMSNorm(config.hidden)
        self.gate_up = nn.Linear(config.hidden, 2 * config.ffn, bias=False)
        self.down = nn.Linear(config.ffn, config.hidden, bias=False)

    def forward(self, x, cos, sin, mask, past):
        b, q_len, hidden = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).split(hidden, dim=-1)
        shape = (b, q_len, self.heads, hidden // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        new = (k, v)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(y.transpose(1, 2).reshape(b, q_len, hidden))
        gate, up = self.gate_up(self.ffn_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up), new


class Decoder(nn.Module):
    inv_freq: torch.Tensor  # a buffer, registered in __init__

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.hidden % config.heads or (config.hidden // config.heads) % 2:
            raise BadInput("hidden must split into heads of even width")
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.hidden)
        blocks = [Block(config) for _ in range(config.layers)]
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.RMSNorm(config.hidden)
        self.head = nn.Linear(config.hidden, config.vocab, bias=False)
        head_dim = config.hidden // config.heads
        inv_freq = config.rope_base ** (-torch.arange(0, head_dim, 2).float() / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)
        for block in blocks:  # GPT-2's scaled init of the residual projections
            for linear in (block.out, block.down):
                nn.init.normal_(linear.weight, std=0.02 / (2 * config.layers) ** 0.5)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self,
        tokens: torch.Tensor,  # [B, Q] int64
        positions: torch.Tensor | None = None,  # [B, Q]; default 0..Q-1
        mask: torch.Tensor | None = None,  # [B, Q, K_past + Q] bool, True = may attend
        past: KV | None = None,
        select: torch.Tensor | None = None,  # [B, S] positions whose logits are wanted
    ) -> tuple[torch.Tensor, KV]:
        """Logits [B, Q, vocab] (or [B, S, vocab] at `select`) and the new tokens'
        keys/values per layer. Without a mask and a past, attention is causal (training)."""
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        angles = positions.unsqueeze(-1).float() * self.inv_freq  # [B, Q, head_dim / 2]
        cos, sin = angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)
        attn_mask = None if mask is None else mask.unsqueeze(1)
        x = self.embed(tokens)
        kvs: KV = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, attn_mask, None if past is None else past[i])
            kvs.append(kv)
        if select is not None:  # search needs a few positions: skip the head elsewhere
            x = x.gather(1, select.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.head(self.norm(x)), kvs


def matmul_parameters(config: ModelConfig) -> int:
    """Parameters that cost 2 FLOPs per token each in a forward: every weight matrix but
    the embedding table (a lookup)."""
    per_layer = 4 * config.hidden**2 + 3 * config.hidden * config.ffn
    return config.layers * per_layer + config.hidden * config.vocab


def forward_flops(config: ModelConfig, tokens: int, attended_pairs: int) -> int:
    """Analytic forward FLOPs: 2 per matmul parameter per token, plus 4 * hidden per
    (query, key) pair per layer for QK^T and AV. Norms and activations are ignored."""
    return (
        2 * matmul_parameters(config) * tokens + 4 * config.hidden * config.layers * attended_pairs
    )


def train_flops(config: ModelConfig, tokens: int, attended_pairs: int) -> int:
    """Forward plus backward: 3 times the forward (the usual 6 * params * tokens)."""
    return 3 * forward_flops(config, tokens, attended_pairs)
