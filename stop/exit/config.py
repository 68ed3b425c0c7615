"""The run configuration of expert iteration: one typed record, the run folder's
config.json, and stored again in every checkpoint (which may raise `iterations`)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, ValidationError

from stop.errors import BadInput
from stop.lmc.tasks import Task, add_task, random_tasks
from stop.records import Record

FAMILIES = ("add", "random")
SEARCHES = ("sf", "mcts")
# Fields that may change when a run is resumed; all others must match the checkpoint's.
RESUMABLE_CHANGES = frozenset({"iterations", "stop_when_solved"})


class ExitConfig(Record):
    """Versioned as every run's config (stop.records.FORMAT_VERSION)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: str = "add"
    max_n: int = 4  # add: tasks add-2 .. add-max_n
    count: int = 20  # random: how many tasks
    task_seed: int = 0
    curriculum: bool = True  # add: start with add-2, add the next when all active are solved
    search: str = "sf"
    rollouts: int = 256  # sf: samples per task; mcts: episodes per task
    simulations: int = 32  # mcts: simulations per step
    temperature: float = 1.2  # sf sampling temperature (paper, Add: 1.2)
    explore: float = 0.0  # sf: uniform share of the sampling mixture for unsolved tasks
    gumbel_scale: float = 1.0  # mcts: g ~ Gumbel(0, scale)
    value_rollouts: int = 16  # epsilon-greedy trajectories per task per iteration
    epsilon: float = 0.25
    preset: str = "cpu"
    lr: float = 1e-3  # paper: 2e-4 (Add), 5e-5 (random) for its larger model
    batch_size: int = 32  # policy sequences per step
    value_batch_size: int = 16  # outcome sequences per step
    train_steps: int = 20  # per iteration
    iterations: int = 40
    stop_when_solved: bool = True
    grammar: bool = True
    n_operands: int = 10  # operands 0..n_operands-1
    max_len: int | None = None  # code units; None: 2 * max_n (add), 16 (random)
    policy_score: Literal["logprob", "logits"] = "logprob"
    priority_scale: float = 30.0  # replay.py
    length_penalty: float = 1.5
    policy_capacity: int = 20_000
    value_capacity: int = 5_000
    seed: int = 0

    @property
    def program_length(self) -> int:
        if self.max_len is not None:
            return self.max_len
        return 2 * self.max_n if self.family == "add" else 16

    def eval_tasks(self) -> list[Task]:
        if self.family == "add":
            return [add_task(k, self.task_seed) for k in range(2, self.max_n + 1)]
        return random_tasks(self.count, self.task_seed)


def make_config(**fields) -> ExitConfig:
    """An ExitConfig from user input: every problem is a BadInput with a clear message."""
    family = fields.get("family", "add")
    if family not in FAMILIES:
        raise BadInput(f"unknown task family {family!r}: expected one of {', '.join(FAMILIES)}")
    search = fields.get("search", "sf")
    if search not in SEARCHES:
        raise BadInput(f"unknown search {search!r}: expected sf or mcts")
    try:
        config = ExitConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInput(f"bad configuration: {where}: {first['msg']}") from exc
    checks = [
        (config.family != "add" or 2 <= config.max_n <= 11, "max-n must be in 2..11"),
        (config.count >= 1, "count must be at least 1"),
        (config.rollouts >= 1 and config.simulations >= 1, "rollouts and simulations must be >= 1"),
        (config.temperature >= 0, "temperature must be non-negative"),
        (0 <= config.epsilon <= 1, "epsilon must be in 0..1"),
        (0 <= config.explore <= 1, "explore must be in 0..1"),
        (config.lr > 0 and config.batch_size >= 1, "lr and batch size must be positive"),
        (config.iterations >= 0 and config.train_steps >= 0, "iterations must be >= 0"),
        (config.program_length >= 2, "max-len must be at least 2"),
        (config.preset in ("tiny", "cpu", "paper"), f"unknown preset {config.preset!r}"),
        (1 <= config.n_operands <= 100, "n-operands must be in 1..100"),
    ]
    for ok, message in checks:
        if not ok:
            raise BadInput(message)
    return config


def incompatibilities(saved: ExitConfig, wanted: ExitConfig) -> list[str]:
    old, new = saved.model_dump(), wanted.model_dump()
    return [
        f"{key}: checkpoint has {old[key]!r}, asked for {new[key]!r}"
        for key in old
        if key not in RESUMABLE_CHANGES and old[key] != new[key]
    ]
