"""Sequence format, outcome characters, code units and the masked loss of stop.exit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stop.exit.tokens import (
    ROLE_ACTION,
    ROLE_OUTCOME,
    ROLE_PROMPT,
    Units,
    encode_trajectory,
    loss_mask,
    outcome_char,
    outcome_of_reward,
    prompt_text,
)
from stop.exit.train import make_batch, masked_loss
from stop.lmc.tasks import Task

TASK = Task(
    name="add-2",
    family="add",
    seed=0,
    input_length=2,
    value_range=(0, 9),
    train=(((0, 1), 1), ((4, 6), 10)),
    test=(((2, 3), 5),),
)


def test_sequence_format_is_the_papers():
    ids, roles = encode_trajectory(TASK, ("ADD", "0", "HLT"), "9")
    text = bytes(ids).decode()
    assert text == "inputs=[[0, 1], [4, 6]]outputs=[1, 10]\nO:9 A:ADD O:9 A:0 O:9 A:HLT "
    assert len(ids) == len(roles)
    prompt = len(prompt_text(TASK))
    assert set(roles[:prompt]) == {ROLE_PROMPT} and ROLE_PROMPT not in roles[prompt:]
    actions = bytes(i for i, r in zip(ids, roles, strict=True) if r == ROLE_ACTION).decode()
    assert actions == "ADD 0 HLT "
    outcomes = bytes(i for i, r in zip(ids, roles, strict=True) if r == ROLE_OUTCOME).decode()
    assert outcomes == "999"


def test_loss_masks_select_actions_or_outcomes_never_the_prompt():
    ids, roles = encode_trajectory(TASK, ("ADD", "0", "HLT"), "6")
    prompt = len(prompt_text(TASK))
    for policy, value in ((True, False), (False, True), (True, True)):
        mask = loss_mask(roles, policy, value)
        assert not any(mask[:prompt])
    policy_mask = loss_mask(roles, True, False)
    assert [r for r, m in zip(roles, policy_mask, strict=True) if m] == [ROLE_ACTION] * 10
    value_mask = loss_mask(roles, False, True)
    assert sum(value_mask) == 3


@pytest.mark.parametrize(
    ("kind", "fraction", "char"),
    [
        ("ok", 0.0, "0"),
        ("ok", 1 / 3, "3"),
        ("ok", 2 / 3, "6"),
        ("ok", 0.5, "5"),
        ("ok", 1.0, "9"),
        ("truncation", None, "T"),
        ("syntax", None, "S"),
        ("runtime", None, "R"),
    ],
)
def test_outcome_characters_round_half_up(kind, fraction, char):
    assert outcome_char(kind, fraction) == char


def test_outcome_of_reward():
    assert [outcome_of_reward(r) for r in (-2, -1, 0, 0.25, 1)] == ["T", "R", "0", "2", "9"]


def test_units_are_prefix_free_and_the_grammar_alternates():
    units = Units(12)
    codes = [bytes(c) for c in units.encoded]
    assert len(units.units) == 11 + 12
    for a in codes:
        for b in codes:
            assert a == b or not b.startswith(a)
    allowed = units.allowed([[], ["ADD"], ["ADD", "0"], ["HLT"]], grammar=True)
    opcodes = slice(0, 11)
    assert allowed[0, opcodes].all() and not allowed[0, 11:].any()
    assert allowed[1, 11:].all() and not allowed[1, opcodes].any()
    assert allowed[2, opcodes].all() and not allowed[2, 11:].any()
    assert units.allowed([["ADD"]], grammar=False).all()


class _FixedLogits(nn.Module):
    """A stand-in model whose logits are a leaf tensor, so gradients can be inspected."""

    def __init__(self, batch: int, width: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(batch, width, 256))

    def forward(self, tokens):
        return self.logits[:, : tokens.shape[1]], None


def test_masked_loss_gives_the_prompt_no_loss_and_no_gradient():
    ids, roles = encode_trajectory(TASK, ("ADD", "0", "HLT"), "9")
    batch = make_batch([(ids, loss_mask(roles, True, False))])
    model = _FixedLogits(1, batch.inputs.shape[1])
    loss = masked_loss(model, batch)
    loss.backward()
    grad_per_position = model.logits.grad.abs().sum(-1)[0]
    prompt = len(prompt_text(TASK))
    # target t + 1 is predicted at position t: prompt targets are positions 0..prompt-2
    assert grad_per_position[: prompt - 1].sum() == 0
    weights = batch.weights[0]
    assert torch.equal(grad_per_position > 0, weights > 0)
    # changing prompt targets does not change the loss
    other = make_batch([(ids, loss_mask(roles, True, False))])
    other.targets[0, : prompt - 1] = 7
    assert torch.allclose(masked_loss(model, other), loss)
    # the loss is the mean cross-entropy over the action targets
    logp = model.logits[0].log_softmax(-1)
    picked = logp[torch.arange(len(weights)), batch.targets[0]]
    assert torch.allclose(loss, -(picked * weights).sum() / weights.sum())
