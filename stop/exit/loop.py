"""The expert-iteration loop: search, replay, train, evaluate, checkpoint.

One iteration:
1. search the active tasks (sampling & filtering, or Gumbel MCTS); every program found
   goes to the prioritized policy buffer;
2. sample epsilon-greedy trajectories into the value buffer;
3. `train_steps` AdamW steps on policy sequences (prioritized) plus outcome sequences;
4. evaluate: greedy decoding (temperature 0) of one program per task of the family, scored
   on the task's test pairs. A task's solve rate is the fraction of its test pairs that
   program answers correctly (0 on any error); it is solved at 1.
5. curriculum (Add-N): add-2 is active first; add-(k+1) joins once add-2..add-k are solved.

FLOPs are analytic (model.py): search counts every forward of search and of the
epsilon-greedy sampler, train counts 3x forward per training step; evaluation is not
counted. A checkpoint is written after every iteration (and one before the first), so
Ctrl-C loses at most the iteration in progress. The run's folder (folder.py) logs an
`iteration` event after each checkpoint, and `failed` or `finished` at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stop.errors import BadInput
from stop.exit.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from stop.exit.config import ExitConfig, incompatibilities
from stop.exit.model import Decoder, default_device, preset
from stop.exit.plot import HISTORY_NAME
from stop.exit.policy import Scorer
from stop.exit.replay import PolicyBuffer, Trajectory, ValueBuffer
from stop.exit.search import sample, score_programs
from stop.exit.tokens import Units
from stop.exit.train import make_batch, train_step, trajectory_items
from stop.lmc.tasks import Task
from stop.records import FORMAT_VERSION, Failed, Finished, IterationSaved, Resumed
from stop.store import RunStore, this_process, write_atomic

log = logging.getLogger(__name__)


@dataclass
class ExitState:
    config: ExitConfig
    model: Decoder
    optimizer: torch.optim.Optimizer
    policy_buffer: PolicyBuffer
    value_buffer: ValueBuffer
    tasks: list[Task]
    rng: np.random.Generator
    generator: torch.Generator
    iteration: int = 0
    curriculum_k: int = 2
    flops_search: int = 0
    flops_train: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def units(self) -> Units:
        return Units(self.config.n_operands)

    def active_tasks(self) -> list[Task]:
        if self.config.family == "add" and self.config.curriculum:
            return [t for t in self.tasks if t.input_length <= self.curriculum_k]
        return self.tasks

    def scorer(self) -> Scorer:
        return Scorer(self.model, self.units, self.config.policy_score)

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "curriculum_k": self.curriculum_k,
            "flops_search": self.flops_search,
            "flops_train": self.flops_train,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "policy_buffer": self.policy_buffer.state(),
            "value_buffer": self.value_buffer.state(),
            "history": json.dumps(self.history),
            "np_rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": self.generator.get_state(),
        }


def new_state(config: ExitConfig, device: torch.device | None = None) -> ExitState:
    torch.manual_seed(config.seed)
    model = Decoder(preset(config.preset)).to(device or default_device())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(config.seed)
    policy_buffer = PolicyBuffer(
        config.policy_capacity, config.priority_scale, config.length_penalty
    )
    return ExitState(
        config,
        model,
        optimizer,
        policy_buffer,
        ValueBuffer(config.value_capacity),
        config.eval_tasks(),
        np.random.default_rng(config.seed),
        generator,
    )


def restore_state(path: Path, wanted: ExitConfig | None = None) -> ExitState:
    """The run state from a checkpoint; with `wanted`, reject an incompatible one."""
    saved, payload = load_checkpoint(path)
    if wanted is not None and (problems := incompatibilities(saved, wanted)):
        raise BadInput(f"checkpoint {path} is from another configuration: {'; '.join(problems)}")
    config = wanted or saved
    state = new_state(config)
    try:
        state.model.load_state_dict(payload["model"])
        state.optimizer.load_state_dict(payload["optimizer"])
        state.policy_buffer.load(payload.get("policy_buffer", []))
        state.value_buffer.load(payload.get("value_buffer", []))
        state.history = json.loads(payload["history"])
        state.iteration = int(payload["iteration"])
        state.curriculum_k = int(payload.get("curriculum_k", 2))
        state.flops_search = int(payload.get("flops_search", 0))
        state.flops_train = int(payload.get("flops_train", 0))
        if "np_rng" in payload:
            state.rng.bit_generator.state = json.loads(payload["np_rng"])
        if "torch_rng" in payload:
            state.generator.set_state(payload["torch_rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise BadInput(f"checkpoint {path} does not fit its own configuration: {exc}") from exc
    return state


def evaluate(state: ExitState, tasks: list[Task] | None = None) -> dict[str, float]:
    """Greedy (temperature 0) program per task; the fraction of its test pairs solved."""
    tasks = tasks if tasks is not None else state.tasks
    programs, _ = sample(
        state.scorer(),
        tasks,
        max_len=state.config.program_length,
        grammar=state.config.grammar,
        temperature=0.0,
    )
    scored = score_programs(programs, tasks, state.config.program_length)
    return {task.name: s.fraction for task, s in zip(tasks, scored, strict=True)}


def search_step(state: ExitState, active: list[Task]) -> tuple[dict[str, float], float]:
    """Search the active tasks, fill the buffers; best reward per task, mean reward."""
    config, scorer = state.config, state.scorer()
    if config.search == "mcts":
        from stop.exit.mcts import mcts_search

        programs, owners, flops = mcts_search(
            scorer,
            active,
            config.rollouts,
            config.simulations,
            max_len=config.program_length,
            grammar=config.grammar,
            gumbel_scale=config.gumbel_scale,
            generator=state.generator,
        )
    else:
        # Tasks greedy decoding does not solve yet get the uniform mixture (`explore`): a
        # new curriculum task often needs an operand no solution has used so far (Add-6's
        # `ADD 4`), which the policy gives almost no mass.
        groups = [(active, 0.0)]
        if config.explore:
            rates = state.history[-1]["solve_rates"] if state.history else {}
            solved = [t for t in active if rates.get(t.name) == 1.0]
            groups = [(solved, 0.0), ([t for t in active if t not in solved], config.explore)]
        owners, programs, flops = [], [], 0
        for part, explore in groups:
            part_owners = [task for task in part for _ in range(config.rollouts)]
            if not part_owners:
                continue
            part_programs, part_flops = sample(
                scorer,
                part_owners,
                max_len=config.program_length,
                grammar=config.grammar,
                temperature=config.temperature,
                explore=explore,
                generator=state.generator,
            )
            owners += part_owners
            programs += part_programs
            flops += part_flops
    scored = score_programs(programs, owners, config.program_length)
    best: dict[str, float] = {}
    for task, s in zip(owners, scored, strict=True):
        state.policy_buffer.add(Trajectory(task.name, s.units, s.outcome, s.reward))
        best[task.name] = max(best.get(task.name, -2.0), s.reward)
    owners_v = [task for task in active for _ in range(config.value_rollouts)]
    if owners_v:
        programs_v, flops_v = sample(
            scorer,
            owners_v,
            max_len=config.program_length,
            grammar=config.grammar,
            epsilon=config.epsilon,
            generator=state.generator,
        )
        flops += flops_v
        for task, s in zip(
            owners_v, score_programs(programs_v, owners_v, config.program_length), strict=True
        ):
            state.value_buffer.add(Trajectory(task.name, s.units, s.outcome, s.reward))
    state.flops_search += flops
    return best, float(np.mean([s.reward for s in scored]))


def train_phase(state: ExitState) -> float:
    config = state.config
    by_name = {task.name: task for task in state.tasks}
    device = next(state.model.parameters()).device
    losses = []
    for _ in range(config.train_steps):
        items = trajectory_items(
            state.policy_buffer.sample(config.batch_size, state.rng), by_name, True
        )
        items += trajectory_items(
            state.value_buffer.sample(config.value_batch_size, state.rng), by_name, False
        )
        if not items:
            break
        loss, flops = train_step(state.model, state.optimizer, make_batch(items, device))
        state.flops_train += flops
        losses.append(loss)
    return float(np.mean(losses)) if losses else float("nan")


def run_exit(
    config: ExitConfig,
    store: RunStore,
    resume: bool = False,
    on_iteration: Callable[[dict[str, Any]], None] | None = None,
) -> ExitState:
    """Expert iteration in the run folder `store` (folder.create or, to resume,
    folder.reopen) until `config.iterations` (or every task solved, when asked)."""
    checkpoint = store.dir / CHECKPOINT_NAME
    if resume:
        state = restore_state(checkpoint, config)  # refused before anything is logged
        store.emit(Resumed(process=this_process()))
    elif checkpoint.exists():
        raise BadInput(f"{store.dir} already holds a run: pass --resume or another --out")
    try:
        if not resume:
            state = new_state(config)
            _save(state, store.dir)
        while state.iteration < config.iterations:
            if config.stop_when_solved and state.history and state.history[-1]["all_solved"]:
                break
            record = iterate(state)
            _save(state, store.dir)
            # After the checkpoint: an `iteration` event says that it can be resumed from.
            store.emit(
                IterationSaved(iteration=record["iteration"], solve_rates=record["solve_rates"])
            )
            log.info(
                "iteration %d: %.0f%% solved", record["iteration"], 100 * record["solved_fraction"]
            )
            if on_iteration is not None:
                on_iteration(record)
    except BaseException as exc:  # Ctrl-C too: the run is marked interrupted
        store.emit(Failed(error=f"{type(exc).__name__}: {exc}"))
        raise
    store.emit(Finished())
    return state


def iterate(state: ExitState) -> dict[str, Any]:
    """One iteration: search, train, evaluate, curriculum; its history record."""
    config = state.config
    started = time.perf_counter()
    active = state.active_tasks()
    best, mean_reward = search_step(state, active)
    loss = train_phase(state)
    rates = evaluate(state)
    solved = [name for name, rate in rates.items() if rate == 1.0]
    if config.family == "add" and config.curriculum:
        active_names = {t.name for t in active}
        if active_names <= set(solved):
            state.curriculum_k = min(state.curriculum_k + 1, config.max_n)
    state.iteration += 1
    record = {
        "iteration": state.iteration,
        "flops_search": state.flops_search,
        "flops_train": state.flops_train,
        "flops_total": state.flops_search + state.flops_train,
        "solve_rates": rates,
        "solved_fraction": len(solved) / len(rates),
        "all_solved": len(solved) == len(rates),
        "search_solved": sorted(name for name, r in best.items() if r == 1.0),
        "active": [t.name for t in active],
        "mean_reward": mean_reward,
        "loss": loss,
        "seconds": time.perf_counter() - started,
    }
    state.history.append(record)
    return record


def _save(state: ExitState, run_dir: Path) -> None:
    save_checkpoint(run_dir / CHECKPOINT_NAME, state.config, state.to_checkpoint())
    summary = {
        "format_version": FORMAT_VERSION,
        "config": state.config.model_dump(),
        "history": state.history,
    }
    write_atomic(run_dir / HISTORY_NAME, json.dumps(summary))
