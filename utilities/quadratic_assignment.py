"""Modified quadratic assignment: one of STOP's downstream tasks.

n = 15 facilities go to n locations, one each. F[i][j] is the flow from facility i to
facility j, D[k][l] the distance from location k to location l, and P[i][k] how much
facility i prefers location k; all three are n x n matrices of uniform random numbers
in [0, 1). An assignment a (a permutation: facility i goes to location a[i]) costs

    cost(a) = sum over i, j of F[i][j] * D[a[i]][a[j]]  -  0.5 * sum over i of P[i][a[i]]

and lower is better.

Scoring: STOP's scorer returned the mean raw objective divided by n^2 (plus the run
time), calling higher better while its seed algorithm minimizes the same objective, so
its direction is unclear. Here cost is minimized, as in the quadratic assignment problem
and STOP's seed. An instance scores (R - cost) / (R - B), clipped to [0, 1]: R is the
exact expected cost of a uniformly random permutation (0 points) and B the best cost of
100 pairwise-swap local searches from random starts, computed on the host when the
instance is generated (1 point). A random assignment thus scores about 0, the reference
1; a cost below B also scores 1. Anything that is not a permutation of 0..n-1 scores 0.
10 validation and 20 test instances; 0.5 s each.

The seed is STOP's: simulated annealing over random swaps, 1000 steps, temperature 1
cooled by a factor 0.99 per step. STOP handed it numpy arrays; here the matrices arrive
as lists, so it indexes F[i][j].
"""

from __future__ import annotations

import random
from itertools import combinations
from typing import Any

import numpy as np

from stop.scoring.task import Instance, TaskSpec

N, LAMBDA = 15, 0.5
RESTARTS = 100  # of the host's reference local search

SEED_SOLUTION = """import math
import random


def algorithm(F, D, P):
    # Simulated annealing over random swaps of two facilities' locations.
    n = len(F)
    lambda_value = 0.5

    def cost(assignment):
        total = sum(F[i][j] * D[assignment[i]][assignment[j]] for i in range(n) for j in range(n))
        return total - lambda_value * sum(P[i][assignment[i]] for i in range(n))

    assignment = list(range(n))
    current = cost(assignment)
    best, best_cost = list(assignment), current
    temperature = 1.0
    for _ in range(1000):
        temperature *= 0.99
        i, j = random.sample(range(n), 2)
        candidate = list(assignment)
        candidate[i], candidate[j] = candidate[j], candidate[i]
        new = cost(candidate)
        delta = new - current
        if delta < 0 or random.random() < math.exp(-delta / temperature):
            assignment, current = candidate, new
            if new < best_cost:
                best, best_cost = list(candidate), new
    return best
"""

DESCRIPTION = f"""Modified quadratic assignment. `algorithm(F, D, P)` gets three n x n matrices
(n = {N}), each a list of n lists of n floats drawn uniformly from [0, 1): F[i][j] is the flow
from facility i to facility j, D[k][l] the distance from location k to location l, P[i][k] the
preference of facility i for location k. Return an assignment: a list (or 1-D numpy array) `a`
of n ints that is a permutation of 0..n-1, facility i going to location a[i]. Its cost, to be
minimized, is
    sum(F[i][j] * D[a[i]][a[j]] for i in range(n) for j in range(n))
    - {LAMBDA} * sum(P[i][a[i]] for i in range(n)).
Score per instance: (R - cost) / (R - B), clipped to [0, 1], where R is the expected cost of a
uniformly random permutation and B the cost found by a good local search; so a random
assignment scores about 0 and matching or beating that local search scores 1. Anything that is
not a permutation of 0..n-1 scores 0, as do a crash and more than 0.5 s. The task score is the
mean over many instances. numpy is available."""


def _cost(f: np.ndarray, d: np.ndarray, p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Costs of a batch of assignments, one per row of `a`."""
    flows = (f * d[a[:, :, None], a[:, None, :]]).sum(axis=(1, 2))
    return flows - LAMBDA * p[np.arange(len(f)), a].sum(axis=1)


def swap_deltas(
    f: np.ndarray, d: np.ndarray, p: np.ndarray, a: np.ndarray, r: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """For each assignment a[b] of a batch, the cost change of swapping the locations of
    facilities r[k] and s[k], for every k: an array of shape (len(a), len(r))."""
    dp = d[a[:, :, None], a[:, None, :]]  # dp[b, i, j] = D[a[b, i]][a[b, j]]
    total = np.zeros((len(a), len(r)))
    # Moving only the rows r, s of dp, then only its columns: sums over every k of
    # F[x][k] dp[y][k] and of F[k][x] dp[k][y].
    for m in (f @ dp.transpose(0, 2, 1), f.T @ dp):
        diagonal = np.diagonal(m, axis1=1, axis2=2)
        total += m[:, r, s] + m[:, s, r] - diagonal[:, r] - diagonal[:, s]
    # Those sums moved the entries of the 2 x 2 block (r, s) one index at a time: take
    # that out and put in the block with both indices moved.
    frr, frs, fsr, fss = f[r, r], f[r, s], f[s, r], f[s, s]
    drr, drs, dsr, dss = dp[:, r, r], dp[:, r, s], dp[:, s, r], dp[:, s, s]
    total -= (frr - frs) * (drs - drr) + (frr - fsr) * (dsr - drr)
    total -= (fsr - fss) * (dss - dsr) + (frs - fss) * (dss - drs)
    total += (frr - fss) * (dss - drr) + (frs - fsr) * (dsr - drs)
    ar, as_ = a[:, r], a[:, s]
    return total - LAMBDA * (p[r, as_] + p[s, ar] - p[r, ar] - p[s, as_])


def reference_cost(f: np.ndarray, d: np.ndarray, p: np.ndarray, rng: random.Random) -> float:
    """Best cost of RESTARTS best-improvement pairwise-swap local searches, run as a batch."""
    n = len(f)
    r, s = np.array(list(combinations(range(n), 2))).T
    starts = []
    for _ in range(RESTARTS):
        start = list(range(n))
        rng.shuffle(start)
        starts.append(start)
    a, runs = np.array(starts), np.arange(RESTARTS)
    while True:
        deltas = swap_deltas(f, d, p, a, r, s)
        k = deltas.argmin(axis=1)
        improving = deltas[runs, k] < -1e-12
        if not improving.any():
            break
        b, k = runs[improving], k[improving]
        a[b, r[k]], a[b, s[k]] = a[b, s[k]], a[b, r[k]]
    return float(_cost(f, d, p, a).min())


def expected_random_cost(f: np.ndarray, d: np.ndarray, p: np.ndarray) -> float:
    """Exact mean cost over all permutations: a[i] is uniform, a[i] != a[j] for i != j."""
    n = len(f)
    off_diagonal = (d.sum() - np.trace(d)) / (n * (n - 1))
    flows = (f.sum() - np.trace(f)) * off_diagonal + np.trace(f) * np.trace(d) / n
    return float(flows - LAMBDA * p.sum() / n)


def make_instance(rng: random.Random) -> Instance:
    f, d, p = ([[rng.random() for _ in range(N)] for _ in range(N)] for _ in range(3))
    arrays = [np.array(m, dtype=np.float64) for m in (f, d, p)]
    return Instance(
        args=[f, d, p],
        answer={
            "matrices": [f, d, p],
            "random": expected_random_cost(*arrays),
            "reference": reference_cost(*arrays, rng),
        },
    )


def score(instance: Instance, output: Any) -> float:
    if type(output) is not list or len(output) != N:
        return 0.0
    if not all(type(x) is int for x in output) or sorted(output) != list(range(N)):
        return 0.0
    f, d, p = instance.answer["matrices"]
    cost = sum(f[i][j] * d[output[i]][output[j]] for i in range(N) for j in range(N))
    cost -= LAMBDA * sum(p[i][output[i]] for i in range(N))
    worst, best = instance.answer["random"], instance.answer["reference"]
    return min(1.0, max(0.0, (worst - cost) / max(worst - best, 1e-9)))


SPEC = TaskSpec(
    name="quadratic_assignment",
    entry="algorithm",
    seed_solution=SEED_SOLUTION,
    description=DESCRIPTION,
    per_call_s=0.5,
    val_size=10,
    test_size=20,
    make_instance=make_instance,
    score=score,
)
build = SPEC.build
