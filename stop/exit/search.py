"""Sampling & filtering (section 2.4.1), the epsilon-greedy sampler and greedy decoding,
all one batched sampler over many rows (task, rollout) with a key/value cache; and the
scoring of finished programs with the batch executor.

A program ends at HLT or when it holds `max_len` code units; one that ends without HLT
is a truncation (reward -2, section 2.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stop.exit.policy import HEAD, Scorer, policy
from stop.exit.tokens import encode, outcome_char, prompt_text
from stop.lmc.batch import run_batch
from stop.lmc.machine import score_outcomes
from stop.lmc.tasks import Task


@dataclass(frozen=True)
class Scored:
    units: tuple[str, ...]
    reward: float  # section 2.1, on the task's test pairs
    outcome: str  # outcome character (tokens.py)
    fraction: float  # test pairs answered correctly, 0 on any error


def is_finished(units: list[str] | tuple[str, ...], max_len: int) -> bool:
    return bool(units) and (units[-1] == "HLT" or len(units) >= max_len)


def score_programs(
    programs: list[tuple[str, ...]], tasks: list[Task], max_len: int
) -> list[Scored]:
    """Reward of programs[i] on tasks[i]'s test pairs, with the numpy batch executor."""
    rows_programs, rows_inputs, owner = [], [], []
    for i, (units, task) in enumerate(zip(programs, tasks, strict=True)):
        if units and units[-1] == "HLT" and len(units) <= max_len:
            text = " ".join(units)
            for inputs, _ in task.test:
                rows_programs.append(text)
                rows_inputs.append(inputs)
                owner.append(i)
    outcomes = run_batch(rows_programs, rows_inputs) if rows_programs else []
    per_program: dict[int, list] = {}
    for i, outcome in zip(owner, outcomes, strict=True):
        per_program.setdefault(i, []).append(outcome)
    results = []
    for i, (units, task) in enumerate(zip(programs, tasks, strict=True)):
        found = per_program.get(i)
        if found is None:
            results.append(Scored(tuple(units), -2.0, "T", 0.0))
            continue
        expected = [output for _, output in task.test]
        reward = score_outcomes(found, expected)
        kinds = {o.kind for o in found}
        kind = "syntax" if "syntax" in kinds else "runtime" if "runtime" in kinds else "ok"
        fraction = max(reward, 0.0) if kind == "ok" else 0.0
        results.append(Scored(tuple(units), reward, outcome_char(kind, fraction), fraction))
    return results


def sample(
    scorer: Scorer,
    tasks: list[Task],
    *,
    max_len: int,
    grammar: bool,
    temperature: float = 1.0,
    epsilon: float | None = None,
    explore: float = 0.0,
    generator: torch.Generator | None = None,
    max_rows: int = 512,
) -> tuple[list[tuple[str, ...]], int]:
    """One program per entry of `tasks` (repeat a task for several rollouts), and the
    forward FLOPs spent. temperature 0 is greedy decoding; with `epsilon`, each unit is
    uniform over the allowed ones with probability epsilon and greedy otherwise; with
    `explore`, sampling draws from (1 - explore) x policy + explore x uniform."""
    programs: list[tuple[str, ...]] = []
    flops = 0
    for start in range(0, len(tasks), max_rows):
        part, part_flops = _sample_rows(
            scorer,
            tasks[start : start + max_rows],
            max_len,
            grammar,
            temperature,
            epsilon,
            explore,
            generator,
        )
        programs += part
        flops += part_flops
    return programs, flops


def _sample_rows(scorer, tasks, max_len, grammar, temperature, epsilon, explore, generator):
    """Rows that share a task and a partial program share one state (one cache row), so
    identical prefixes, common once the policy is peaked, are scored once."""
    units, device = scorer.units, scorer.device
    head = encode(HEAD)
    task_ids: dict[int, int] = {}
    row_task = np.array([task_ids.setdefault(id(task), len(task_ids)) for task in tasks])
    first_of = {tid: tasks[row] for row, tid in reversed(list(enumerate(row_task)))}
    programs: list[list[str]] = [[] for _ in tasks]
    states = [(tid, ()) for tid in range(len(task_ids))]  # (task id, program so far)
    chunks = [encode(prompt_text(first_of[tid])) + head for tid, _ in states]
    row_state = row_task.copy()  # state index of each active row
    active = np.arange(len(tasks))
    cache, flops = None, 0
    while len(active):
        allowed_np = units.allowed([list(program) for _, program in states], grammar)
        subset = _common_subset(allowed_np)
        scored = scorer(chunks, cache, subset)
        flops += scored.flops
        allowed = torch.from_numpy(allowed_np).to(device)
        state_index = torch.from_numpy(row_state).to(device)
        if epsilon is not None:
            greedy = scored.scores.masked_fill(~allowed, float("-inf")).argmax(-1)[state_index]
            row_allowed = allowed[state_index].float()
            uniform = torch.multinomial(row_allowed, 1, generator=generator).squeeze(-1)
            explore = torch.rand(len(active), generator=generator, device=device) < epsilon
            choice = torch.where(explore, uniform, greedy)
        elif temperature == 0:
            choice = scored.scores.masked_fill(~allowed, float("-inf")).argmax(-1)[state_index]
        else:
            probs = policy(scored.scores, allowed, temperature)
            if explore:
                uniform = allowed.float() / allowed.sum(-1, keepdim=True)
                probs = (1 - explore) * probs + explore * uniform
            probs = probs[state_index]
            choice = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        new_states: dict[tuple, int] = {}
        parents, chunks, keep, next_state = [], [], [], []
        for j, (row, c) in enumerate(zip(active.tolist(), choice.tolist(), strict=True)):
            unit = units.units[c]
            programs[row].append(unit)
            if is_finished(programs[row], max_len):
                continue
            key = (int(row_task[row]), tuple(programs[row]))
            if key not in new_states:
                new_states[key] = len(new_states)
                parents.append(int(row_state[j]))
                chunks.append(encode(unit + " ") + head)
            keep.append(j)
            next_state.append(new_states[key])
        active, row_state = active[keep], np.array(next_state, dtype=np.int64)
        states = list(new_states)
        if len(active):
            cache = scored.cache.select(torch.tensor(parents, device=device))
    return [tuple(p) for p in programs], flops


def _common_subset(allowed: np.ndarray) -> tuple[int, ...] | None:
    """The units to score: with the grammar every state of a step allows the same ones."""
    union = allowed.any(0)
    return None if union.all() else tuple(np.flatnonzero(union).tolist())
