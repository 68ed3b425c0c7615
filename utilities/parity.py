"""Learning parity without noise: one of STOP's downstream tasks (lpn.py with no noise).

A hidden subset of 10 bits (each in it with probability 0.3) decides the label: the
parity of those bits. 100 training samples with their correct labels; predict the labels
of 20 test samples. Score: the fraction of test labels predicted correctly (STOP's). STOP
set no time limit on this task; here each instance gets 2 s, as lpn does. 20 validation
and 50 test instances.
"""

from __future__ import annotations

import functools

from stop.scoring.task import TaskSpec
from utilities import lpn
from utilities.lpn import N_BITS, N_TEST, N_TRAIN, P_TRUE

DESCRIPTION = f"""Learning parity. `algorithm(train_samples, train_parity, test_samples)` gets
{N_TRAIN} training samples (lists of {N_BITS} bits, 0 or 1) with their labels and {N_TEST}
test samples, and must return {N_TEST} predicted labels (0 or 1), one per test sample, as a flat
list or 1-D numpy array. A label is the parity (sum mod 2) of a hidden subset of the bits, each
bit in the subset with probability {P_TRUE}; every label, training and test, is correct (there
is no noise). Score: the fraction of test labels predicted correctly, averaged over many
instances; an output of the wrong shape, a crash or more than 2 s on an instance scores 0 for
that instance. numpy is available."""


SPEC = TaskSpec(
    name="parity",
    entry="algorithm",
    seed_solution=lpn.SEED_SOLUTION,
    description=DESCRIPTION,
    per_call_s=2.0,
    val_size=20,
    test_size=50,
    make_instance=functools.partial(lpn.make_instance, noise=0.0),
    score=lpn.score,
)
build = SPEC.build
