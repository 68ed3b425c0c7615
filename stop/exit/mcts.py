"""Gumbel MCTS (section 2.4.2, after Danihelka et al. 2021), run anew at every step.

At the root: Gumbel-top-m actions by g(a) + u(a), g ~ Gumbel(0, gumbel_scale), then
sequential halving: the budget is split into ceil(log2 m) equal phases, each remaining
action is visited equally often within a phase, and the better half by
g(a) + u(a) + sigma(q(a)) survives; the action finally taken is the best survivor.
Interior nodes use equation 3's deterministic rule
argmax_a p'(a) - N(a) / (1 + sum_b N(b)), p' = softmax(u + sigma(q)).
Leaves get the model's value (policy.py); a finished program gets its true reward.

Constants (Gumbel MuZero's): sigma(q) = (c_visit + max_b N(b)) * c_scale * q_hat with
c_visit = 50, c_scale = 0.1, and q_hat = (q + 2) / 3, the reward range [-2, 1] mapped to
[0, 1]. An unvisited action's q is its parent's predicted value (a simple completion,
in place of Gumbel MuZero's v_mix). At most 16 actions are considered at the root.

Many episodes (tasks x rollouts) run in lockstep as generators, so the leaves of all
of them are evaluated in one batched forward per simulation.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from stop.exit.policy import HEAD, Scorer
from stop.exit.search import is_finished, score_programs
from stop.exit.tokens import encode, prompt_text
from stop.lmc.tasks import Task

C_VISIT = 50.0
C_SCALE = 0.1
R_MIN, R_MAX = -2.0, 1.0
MAX_CONSIDERED = 16


def sigma(q_hat: np.ndarray, max_visits: int) -> np.ndarray:
    return (C_VISIT + max_visits) * C_SCALE * q_hat


def normalize(q: np.ndarray) -> np.ndarray:
    return (q - R_MIN) / (R_MAX - R_MIN)


def halving_schedule(n_simulations: int, m: int) -> list[tuple[int, int]]:
    """(actions kept, visits per action) for each phase of sequential halving: ceil(log2 m)
    phases (1 if m == 1), each spending about n_simulations / phases, halving the actions."""
    phases = max(1, math.ceil(math.log2(m))) if m > 1 else 1
    schedule, remaining, left = [], m, n_simulations
    for phase in range(phases):
        budget = left if phase == phases - 1 else n_simulations // phases
        visits = max(1, budget // remaining)
        schedule.append((remaining, visits))
        left -= visits * remaining
        remaining = max(1, math.ceil(remaining / 2))
    return schedule


@dataclass
class Node:
    scores: np.ndarray  # u(a) per unit, -inf where not allowed
    value: float  # the model's value, or the true reward of a finished program
    terminal: bool = False
    children: dict[int, Node] = field(default_factory=dict)
    visits: np.ndarray = field(init=False)  # per action
    value_sums: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.visits = np.zeros(len(self.scores), np.int64)
        self.value_sums = np.zeros(len(self.scores))

    def completed_q(self) -> np.ndarray:
        q = np.full(len(self.scores), self.value)
        seen = self.visits > 0
        q[seen] = self.value_sums[seen] / self.visits[seen]
        return q

    def improved_policy(self) -> np.ndarray:
        logits = self.scores + sigma(normalize(self.completed_q()), int(self.visits.max()))
        logits = logits - logits[np.isfinite(logits)].max()
        p = np.exp(logits)
        return p / p.sum()

    def select_interior(self) -> int:
        """Equation 3."""
        score = self.improved_policy() - self.visits / (1 + self.visits.sum())
        score[~np.isfinite(self.scores)] = -np.inf
        return int(score.argmax())


# An episode yields the partial programs it needs evaluated and receives (scores, value);
# it returns its program and every finished program it met, with its rewards.
Episode = Generator[tuple[str, ...], tuple[np.ndarray, float], tuple[str, ...]]


def episode(
    task: Task,
    names: list[str],
    n_simulations: int,
    max_len: int,
    gumbel_scale: float,
    rng: np.random.Generator,
    rewards: dict[tuple[str, ...], float],
    start: tuple[str, ...] = (),
) -> Episode:
    """One program for `task` by MCTS at every step; `names` are the units' texts and
    `rewards` caches the true reward of each finished program met (shared per task)."""
    units = start
    while not is_finished(units, max_len):
        scores, value = yield units
        root = Node(scores, value)
        allowed = np.flatnonzero(np.isfinite(scores))
        m = min(MAX_CONSIDERED, len(allowed), n_simulations)
        gumbel = rng.gumbel(size=len(scores)) * gumbel_scale
        ranked = allowed[np.argsort(-(gumbel + scores)[allowed], kind="stable")]
        considered = ranked[:m]
        for keep, visits in halving_schedule(n_simulations, m):
            considered = _best(root, considered, gumbel, keep)
            for action in considered:
                for _ in range(visits):
                    yield from _simulate(root, units, int(action), names, max_len, rewards, task)
        chosen = int(_best(root, considered, gumbel, 1)[0])
        units = (*units, names[chosen])
    return units


def _best(root: Node, actions: np.ndarray, gumbel: np.ndarray, keep: int) -> np.ndarray:
    q_hat = normalize(root.completed_q())
    score = gumbel + root.scores + sigma(q_hat, int(root.visits.max()))
    order = np.argsort(-score[actions], kind="stable")
    return actions[order[:keep]]


def _simulate(root, units, action, names, max_len, rewards, task):
    path: list[tuple[Node, int]] = []
    node = root
    while True:
        path.append((node, action))
        units = (*units, names[action])
        child = node.children.get(action)
        if child is None:
            if is_finished(units, max_len):
                if units not in rewards:
                    rewards[units] = score_programs([units], [task], max_len)[0].reward
                child = Node(np.full(len(node.scores), -np.inf), rewards[units], terminal=True)
            else:
                scores, value = yield units
                child = Node(scores, value)
            node.children[action] = child
            value = child.value
            break
        if child.terminal:
            value = child.value
            break
        node, action = child, child.select_interior()
    for parent, a in path:
        parent.visits[a] += 1
        parent.value_sums[a] += value


def mcts_search(
    scorer: Scorer,
    tasks: list[Task],
    rollouts: int,
    n_simulations: int,
    *,
    max_len: int,
    grammar: bool,
    gumbel_scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[list[tuple[str, ...]], list[Task], int]:
    """`rollouts` MCTS episodes per task. Returns the programs taken and every other
    finished program the trees met (all real, scored programs for the replay buffer),
    their tasks, and the forward FLOPs spent."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    owners = [task for task in tasks for _ in range(rollouts)]
    seen: list[dict[tuple[str, ...], float]] = [{} for _ in tasks]
    task_slot = {id(task): i for i, task in enumerate(tasks)}
    episodes = [
        episode(
            t,
            scorer.units.units,
            n_simulations,
            max_len,
            gumbel_scale,
            rng,
            seen[task_slot[id(t)]],
        )
        for t in owners
    ]
    prompts = [encode(prompt_text(task)) for task in owners]
    head = encode(HEAD)
    pending: dict[int, tuple[str, ...]] = {}
    finals: dict[int, tuple[str, ...]] = {}
    for i, ep in enumerate(episodes):
        pending[i] = next(ep)
    flops = 0
    while pending:
        items = list(pending.items())
        allowed = scorer.units.allowed([list(units) for _, units in items], grammar)
        chunks = [
            prompts[i] + [b for unit in units for b in head + encode(unit + " ")] + head
            for i, units in items
        ]
        scores = np.full(allowed.shape, -np.inf)
        values = np.zeros(len(items))
        for subset_rows in _group_by_allowed(allowed):
            subset = tuple(np.flatnonzero(allowed[subset_rows[0]]).tolist())
            scored = scorer([chunks[r] for r in subset_rows], None, subset)
            flops += scored.flops
            part = scored.scores.cpu().numpy()
            scores[subset_rows] = np.where(allowed[subset_rows], part, -np.inf)
            values[subset_rows] = scored.values.cpu().numpy()
        pending = {}
        for row, (i, _) in enumerate(items):
            try:
                pending[i] = episodes[i].send((scores[row], float(values[row])))
            except StopIteration as stop:
                finals[i] = stop.value
    programs = [finals[i] for i in range(len(owners))]
    extra_programs, extra_owners = [], []
    for task, found in zip(tasks, seen, strict=True):
        for units in found:
            extra_programs.append(units)
            extra_owners.append(task)
    return programs + extra_programs, owners + extra_owners, flops


def _group_by_allowed(allowed: np.ndarray) -> list[list[int]]:
    groups: dict[bytes, list[int]] = {}
    for row in range(len(allowed)):
        groups.setdefault(allowed[row].tobytes(), []).append(row)
    return list(groups.values())
