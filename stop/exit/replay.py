"""Replay buffers (sections 2.3 and 2.4.2).

`PolicyBuffer` holds every distinct (task, program) found by search and samples with
reward-based priority, weight exp(priority_scale * reward - length_penalty * code units).
The defaults (30 per unit of reward, 1.5 per code unit) make it nearly lexicographic:
a right program (reward 1) outweighs a wrong one (reward 0) by e^30 / e^(1.5 * length
difference), so thousands of distinct wrong programs cannot drown the few right ones,
and among equally good programs the shorter wins (`ADD 0 HLT` is drawn e^3 ~ 20 times as
often as `ADD 0 ADD 9 HLT`): the policy concentrates on one clean solution per task
rather than averaging many padded ones, which greedy decoding would mix up. Priorities are
normalized within each task and the tasks weigh the same: an easy task with hundreds of
right programs must not crowd out the single right program of a harder one.
`ValueBuffer` holds
epsilon-greedy trajectories, drawn uniformly, which train only the outcome predictor. Both evict the
oldest entries past their capacity.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    task: str  # task name
    units: tuple[str, ...]
    outcome: str  # outcome character
    reward: float

    def to_record(self) -> list:
        return [self.task, list(self.units), self.outcome, self.reward]

    @classmethod
    def from_record(cls, record: list) -> Trajectory:
        task, units, outcome, reward = record
        return cls(str(task), tuple(units), str(outcome), float(reward))


class PolicyBuffer:
    def __init__(
        self, capacity: int = 20_000, priority_scale: float = 30.0, length_penalty: float = 1.5
    ) -> None:
        self.capacity, self.priority_scale = capacity, priority_scale
        self.length_penalty = length_penalty
        self.items: OrderedDict[tuple[str, tuple[str, ...]], Trajectory] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def add(self, trajectory: Trajectory) -> None:
        key = (trajectory.task, trajectory.units)
        self.items.pop(key, None)  # seen again: refresh its age
        self.items[key] = trajectory
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)

    def priorities(self) -> np.ndarray:
        rewards = np.array([t.reward for t in self.items.values()], dtype=np.float64)
        lengths = np.array([len(t.units) for t in self.items.values()], dtype=np.float64)
        logits = self.priority_scale * rewards - self.length_penalty * lengths
        tasks = np.array([t.task for t in self.items.values()])
        weights = np.zeros(len(rewards))
        names = np.unique(tasks)
        for name in names:
            mine = tasks == name
            w = np.exp(logits[mine] - logits[mine].max())
            weights[mine] = w / w.sum() / len(names)
        return weights

    def sample(self, n: int, rng: np.random.Generator) -> list[Trajectory]:
        if not self.items:
            return []
        values = list(self.items.values())
        picks = rng.choice(len(values), size=n, p=self.priorities())
        return [values[i] for i in picks]

    def state(self) -> list:
        return [t.to_record() for t in self.items.values()]

    def load(self, records: list) -> None:
        self.items.clear()
        for record in records:
            self.add(Trajectory.from_record(record))


class ValueBuffer:
    def __init__(self, capacity: int = 5_000) -> None:
        self.items: deque[Trajectory] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, trajectory: Trajectory) -> None:
        self.items.append(trajectory)

    def sample(self, n: int, rng: np.random.Generator) -> list[Trajectory]:
        if not self.items:
            return []
        return [self.items[i] for i in rng.integers(0, len(self.items), size=n)]

    def state(self) -> list:
        return [t.to_record() for t in self.items]

    def load(self, records: list) -> None:
        self.items.clear()
        for record in records:
            self.add(Trajectory.from_record(record))
