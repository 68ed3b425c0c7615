"""Learning parity with noise: STOP's main meta-optimization task.

A hidden subset of 10 bits (each in it with probability 0.3) decides the label: the
parity of those bits. 100 training samples, 5% of their labels flipped; predict the
labels of 20 clean test samples. 20 validation and 50 test instances; 2 s each.
"""

from __future__ import annotations

import random
from typing import Any

from stop.scoring.task import Instance, TaskSpec

N_BITS, P_TRUE, N_TRAIN, N_TEST, NOISE = 10, 0.3, 100, 20, 0.05

SEED_SOLUTION = """import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    predictions = np.random.binomial(1, 0.5, len(test_samples))
    return predictions
"""

DESCRIPTION = f"""Learning parity with noise. `algorithm(train_samples, train_parity, test_samples)`
gets {N_TRAIN} training samples (lists of {N_BITS} bits, 0 or 1) with their labels and
{N_TEST} test samples, and must return {N_TEST} predicted labels (0 or 1), one per test sample, as a
flat list or 1-D numpy array. A label is the parity (sum mod 2) of a hidden subset of the bits,
each bit in the subset with probability {P_TRUE}; {NOISE:.0%} of the training labels are flipped,
test labels are not. Score: the fraction of test labels predicted correctly, averaged over
many instances; an output of the wrong shape, a crash or more than 2 s on an instance scores 0
for that instance. numpy is available."""


def make_instance(rng: random.Random, noise: float = NOISE) -> Instance:
    true_bits = [int(rng.random() < P_TRUE) for _ in range(N_BITS)]
    samples = [[rng.randint(0, 1) for _ in range(N_BITS)] for _ in range(N_TRAIN + N_TEST)]
    parity = [sum(s * t for s, t in zip(row, true_bits, strict=True)) % 2 for row in samples]
    train_parity = [(p + int(rng.random() < noise)) % 2 for p in parity[:N_TRAIN]]
    return Instance(
        args=[samples[:N_TRAIN], train_parity, samples[N_TRAIN:]],
        answer=parity[N_TRAIN:],
    )


def score(instance: Instance, output: Any) -> float:
    # Explicit shapes: comparing a (20, 1) array with 20 labels once broadcast into 400
    # comparisons and let an improver score without solving anything.
    labels = instance.answer
    if type(output) is not list or len(output) != len(labels):
        return 0.0
    # Exact numbers only: no nested lists, strings or NaN (which arrives as the str "nan").
    if not all(type(p) in (int, float, bool) for p in output):
        return 0.0
    return sum(int(p == y) for p, y in zip(output, labels, strict=True)) / len(labels)


SPEC = TaskSpec(
    name="lpn",
    entry="algorithm",
    seed_solution=SEED_SOLUTION,
    description=DESCRIPTION,
    per_call_s=2.0,
    val_size=20,
    test_size=50,
    make_instance=make_instance,
    score=score,
)
build = SPEC.build
