"""`stop bench exit`: training throughput of stop.exit's train step against a minimal
plain PyTorch loop. Same model (the cpu preset), same batch of real trajectories, AdamW;
both do forward, masked loss, backward, step. Needs the `exit` extra (torch)."""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from stop.bench import Figure, figure
from stop.exit.model import Decoder, preset
from stop.exit.replay import Trajectory
from stop.exit.train import make_batch, train_step, trajectory_items
from stop.lmc.tasks import add_tasks


def plain_step(model, optimizer, inputs, targets, weights):
    logits, _ = model(inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    loss = (loss * weights.flatten()).sum() / weights.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def bench_exit(steps: int = 30, batch_size: int = 48, preset_name: str = "cpu") -> list[Figure]:
    torch.manual_seed(0)
    tasks = {t.name: t for t in add_tasks(6)}
    # the Add-N solutions: ADD 0 ADD 1 ... HLT
    programs = [
        tuple(u for j in range(k - 1) for u in ("ADD", str(j))) + ("HLT",) for k in range(2, 7)
    ]
    trajectories = [Trajectory(f"add-{len(p) // 2 + 1}", p, "9", 1.0) for p in programs]
    items = trajectory_items((trajectories * batch_size)[:batch_size], tasks, policy=True)
    batch = make_batch(items)
    ours_model = Decoder(preset(preset_name))
    plain_model = copy.deepcopy(ours_model)
    ours_opt = torch.optim.AdamW(ours_model.parameters(), lr=1e-3)
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-3)

    def time_ours() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            train_step(ours_model, ours_opt, batch)
        return time.perf_counter() - start

    def time_plain() -> float:
        plain_model.train()
        start = time.perf_counter()
        for _ in range(steps):
            plain_step(plain_model, plain_opt, batch.inputs, batch.targets, batch.weights)
        return time.perf_counter() - start

    time_ours(), time_plain()  # warm-up
    ours, plain = [], []
    for _ in range(3):  # interleaved, best of 3: both see the same machine load
        ours.append(time_ours())
        plain.append(time_plain())
    samples = steps * batch_size
    return [
        figure(
            f"exit train step (batch {batch_size}, preset {preset_name}; goal > 0.9)",
            samples / min(plain),
            samples / min(ours),
            "samples/s",
            higher_is_better=True,
        )
    ]
