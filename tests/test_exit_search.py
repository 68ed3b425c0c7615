"""Equations 1-3, the value, sequential halving, sampling and prioritized replay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stop.exit.mcts import C_SCALE, C_VISIT, Node, episode, halving_schedule, normalize, sigma
from stop.exit.model import Decoder, preset
from stop.exit.policy import HEAD, Scorer, policy
from stop.exit.replay import PolicyBuffer, Trajectory, ValueBuffer
from stop.exit.search import sample, score_programs
from stop.exit.tokens import OUTCOME_CHARS, OUTCOME_VALUE, Units, encode, prompt_text
from stop.lmc.tasks import add_task, add_tasks


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    return Decoder(preset("tiny")).eval()


def _context(task, units):
    return (
        encode(prompt_text(task))
        + [b for u in units for b in encode(HEAD + u + " ")]
        + encode(HEAD)
    )


@pytest.mark.parametrize("score", ["logprob", "logits"])
def test_policy_is_softmax_of_summed_token_scores_computed_by_hand(tiny, score):
    units = Units(10)
    scorer = Scorer(tiny, units, score)
    task = add_task(3)
    context = _context(task, ("ADD",))
    got = scorer([context]).scores[0]
    by_hand = []
    with torch.no_grad():
        for code in units.encoded:  # equation 1, one full forward per unit
            logits, _ = tiny(torch.tensor([context + code]))
            table = logits[0].log_softmax(-1) if score == "logprob" else logits[0]
            by_hand.append(sum(table[len(context) - 1 + k, b] for k, b in enumerate(code)))
    assert torch.allclose(got, torch.stack(by_hand), atol=1e-4)
    allowed = torch.from_numpy(units.allowed([["ADD"]], grammar=True))
    p = policy(got[None], allowed)[0]
    operands = torch.stack(by_hand)[11:]
    assert torch.allclose(p[11:], operands.softmax(-1), atol=1e-5)  # equation 2
    assert p[:11].sum() == 0


def test_value_is_the_expected_reward_of_the_outcome_distribution(tiny):
    scorer = Scorer(tiny, Units(10))
    context = _context(add_task(2), ())
    got = scorer([context]).values[0]
    with torch.no_grad():
        logits, _ = tiny(torch.tensor([context]))
    slot = logits[0, len(context) - 5, [ord(c) for c in OUTCOME_CHARS]].softmax(-1)
    want = sum(p * OUTCOME_VALUE[c] for p, c in zip(slot.tolist(), OUTCOME_CHARS, strict=True))
    assert got.item() == pytest.approx(want, abs=1e-5)


def test_cached_scoring_equals_a_fresh_forward_and_subsets_agree(tiny):
    scorer = Scorer(tiny, Units(10))
    tasks = add_tasks(4)
    first = scorer([_context(t, ()) for t in tasks])
    steps = [encode(u + " ") + encode(HEAD) for u in ("ADD", "HLT", "LDL")]
    cached = scorer(steps, first.cache)
    fresh = scorer([_context(t, (u,)) for t, u in zip(tasks, ("ADD", "HLT", "LDL"), strict=True)])
    assert torch.allclose(cached.scores, fresh.scores, atol=1e-4)
    assert torch.allclose(cached.values, fresh.values, atol=1e-5)
    part = scorer([_context(tasks[0], ())], subset=(0, 10))
    whole = scorer([_context(tasks[0], ())])
    assert torch.isinf(part.scores[0, 1:10]).all()
    assert torch.allclose(part.scores[0, [0, 10]], whole.scores[0, [0, 10]], atol=1e-4)


def test_sampling_finishes_every_program_and_greedy_is_deterministic(tiny):
    scorer = Scorer(tiny, Units(10))
    tasks = [add_task(2)] * 20 + [add_task(3)] * 20
    gen = torch.Generator().manual_seed(0)
    programs, flops = sample(scorer, tasks, max_len=6, grammar=True, temperature=1.0, generator=gen)
    assert flops > 0 and len(programs) == 40
    assert all(p[-1] == "HLT" or len(p) == 6 for p in programs)
    greedy, _ = sample(scorer, tasks, max_len=6, grammar=True, temperature=0.0)
    assert len(set(greedy[:20])) == 1 and len(set(greedy[20:])) == 1
    explore, _ = sample(scorer, tasks, max_len=6, grammar=True, epsilon=1.0, generator=gen)
    assert len(set(explore)) > 5


def test_explore_mixes_the_uniform_distribution_into_sampling(tiny):
    """explore=1 samples every allowed unit alike, whatever the policy; at 0 it is the policy."""
    scorer = Scorer(tiny, Units(10))
    tasks = [add_task(6)] * 2000
    gen = torch.Generator().manual_seed(0)
    uniform, _ = sample(
        scorer, tasks, max_len=2, grammar=True, temperature=0.05, explore=1.0, generator=gen
    )
    operands = np.bincount(
        [int(p[1]) for p in uniform if len(p) > 1 and p[1].isdigit()], minlength=10
    )
    assert operands.sum() > 1500 and operands.min() > 0.6 * operands.mean()
    peaked, _ = sample(scorer, tasks, max_len=2, grammar=True, temperature=0.05, generator=gen)
    (greedy,), _ = sample(scorer, tasks[:1], max_len=2, grammar=True, temperature=0.0)
    assert sum(p == greedy for p in peaked) > 0.5 * len(tasks)
    assert sum(p == greedy for p in uniform) < 0.1 * len(tasks)


def test_score_programs_rewards():
    task = add_task(2)
    scored = score_programs(
        [
            ("ADD", "0", "HLT"),
            ("HLT",),
            ("ADD", "0", "ADD"),
            ("BRA", "1", "HLT"),
            ("ADD", "12", "HLT"),
        ],
        [task] * 5,
        max_len=3,
    )
    assert [s.reward for s in scored] == [1.0, 0.0, -2.0, -1.0, -1.0]
    assert [s.outcome for s in scored] == ["9", "0", "T", "R", "R"]


def test_sequential_halving_schedule():
    schedule = halving_schedule(64, 16)
    assert len(schedule) == 4 == math.ceil(math.log2(16))
    assert [kept for kept, _ in schedule] == [16, 8, 4, 2]
    assert [kept * visits for kept, visits in schedule] == [16, 16, 16, 16]  # equal phases
    assert halving_schedule(10, 1) == [(1, 10)]
    kept = [k for k, _ in halving_schedule(100, 11)]
    assert kept == [11, 6, 3, 2]
    assert sum(k * v for k, v in halving_schedule(100, 11)) <= 100 + 11


def test_sigma_and_equation_3():
    assert sigma(np.array([1.0]), 10)[0] == pytest.approx((C_VISIT + 10) * C_SCALE)
    assert normalize(np.array([-2.0, 1.0])).tolist() == [0.0, 1.0]
    node = Node(np.array([np.log(0.5), np.log(0.3), np.log(0.2), -np.inf]), value=0.0)
    node.visits[:] = [3, 0, 1, 0]
    node.value_sums[:] = [3 * 0.0, 0.0, 1 * 1.0, 0.0]
    p = node.improved_policy()
    q = np.array([0.0, 0.0, 1.0, 0.0])  # unvisited: the parent's value
    logits = node.scores + (C_VISIT + 3) * C_SCALE * normalize(q)
    want = np.exp(logits - logits[:3].max())
    want /= want.sum()
    assert np.allclose(p, want)
    by_hand = np.argmax(np.where(np.isfinite(node.scores), want - node.visits / (1 + 4), -np.inf))
    assert node.select_interior() == by_hand


def test_gumbel_mcts_picks_the_only_right_last_unit():
    """After `ADD 0` with room for one unit, only HLT is not a truncation: sequential
    halving must visit it, see its true reward and take it, whatever the priors say."""
    units = Units(10)
    task = add_task(2)
    rng = np.random.default_rng(0)
    scores = np.where(units.allowed([["ADD", "0"]], True)[0], 0.0, -np.inf)
    scores[units.index("BRA")] = 5.0  # a prior that prefers a wrong unit
    gen = episode(task, units.units, 32, 3, 1.0, rng, {}, start=("ADD", "0"))
    request = next(gen)
    assert request == ("ADD", "0")
    with pytest.raises(StopIteration) as stop:
        gen.send((scores, 0.0))  # every child is terminal: no more evaluations asked
    assert stop.value.value == ("ADD", "0", "HLT")


def test_prioritized_sampling_prefers_high_reward_and_balances_tasks():
    buffer = PolicyBuffer(priority_scale=2.0, length_penalty=0.0)
    for i in range(10):
        buffer.add(Trajectory("a", ("HLT", str(i)), "0", 0.0))
    buffer.add(Trajectory("a", ("ADD", "0", "HLT"), "9", 1.0))
    buffer.add(Trajectory("a", ("BRA", "1", "HLT"), "R", -1.0))
    buffer.add(Trajectory("b", ("HLT",), "0", 0.0))
    picks = buffer.sample(20_000, np.random.default_rng(0))
    counts = {}
    for t in picks:
        counts[(t.task, t.reward)] = counts.get((t.task, t.reward), 0) + 1
    per_program_zero = counts[("a", 0.0)] / 10
    assert counts[("a", 1.0)] > 5 * per_program_zero > 5 * 5 * counts[("a", -1.0)] / 5
    assert abs(counts[("b", 0.0)] / 20_000 - 0.5) < 0.02  # each task weighs the same
    shorter = PolicyBuffer(priority_scale=2.0, length_penalty=1.0)
    shorter.add(Trajectory("a", ("ADD", "0", "HLT"), "9", 1.0))
    shorter.add(Trajectory("a", ("ADD", "0", "BRZ", "9", "HLT"), "9", 1.0))
    p = shorter.priorities()
    assert p[0] / p[1] == pytest.approx(math.e**2)
    values = ValueBuffer(capacity=3)
    for i in range(5):
        values.add(Trajectory("a", (str(i),), "0", 0.0))
    assert [t.units for t in values.items] == [("2",), ("3",), ("4",)]
