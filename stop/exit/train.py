"""The masked next-token loss and one training step.

Sequences are right-padded; the target at position t is token t + 1 and its weight comes
from `tokens.loss_mask` (the I/O prompt never gets a loss, policy sequences train their
action bytes and value sequences their outcome characters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stop.exit.model import Decoder, train_flops
from stop.exit.replay import Trajectory
from stop.exit.tokens import PAD, encode_trajectory, loss_mask
from stop.lmc.tasks import Task


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T - 1] tokens
    targets: torch.Tensor  # [B, T - 1] next tokens
    weights: torch.Tensor  # [B, T - 1] loss weight of each target

    @property
    def flops_shape(self) -> tuple[int, int]:
        """(tokens, attended query/key pairs) as computed, padding included."""
        b, t = self.inputs.shape
        return b * t, b * t * (t + 1) // 2


def make_batch(
    items: list[tuple[list[int], list[float]]], device: torch.device | str = "cpu"
) -> Batch:
    """items: (token ids, weight of each token as a target)."""
    width = max(len(ids) for ids, _ in items)
    tokens = torch.full((len(items), width), PAD, dtype=torch.long)
    weights = torch.zeros(len(items), width)
    for row, (ids, mask) in enumerate(items):
        tokens[row, : len(ids)] = torch.tensor(ids)
        weights[row, : len(mask)] = torch.tensor(mask)
    return Batch(tokens[:, :-1].to(device), tokens[:, 1:].to(device), weights[:, 1:].to(device))


def trajectory_items(
    trajectories: list[Trajectory], tasks: dict[str, Task], policy: bool
) -> list[tuple[list[int], list[float]]]:
    items = []
    for t in trajectories:
        ids, roles = encode_trajectory(tasks[t.task], t.units, t.outcome)
        items.append((ids, loss_mask(roles, train_policy=policy, train_value=not policy)))
    return items


def masked_loss(model: Decoder, batch: Batch) -> torch.Tensor:
    logits, _ = model(batch.inputs)
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), reduction="none"
    )
    weights = batch.weights.reshape(-1)
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def train_step(model: Decoder, optimizer: torch.optim.Optimizer, batch: Batch) -> tuple[float, int]:
    """One AdamW step on the masked loss; the loss and the FLOPs spent."""
    model.train()
    loss = masked_loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), train_flops(model.config, *batch.flops_shape)
