"""Tests of the downstream tasks: every module in utilities/ that defines a TaskSpec.

Each task's seed solution and a known-good reference solution run for real, sandboxed,
on the validation split; the scorers are also called directly with hostile outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stop.scoring.task import Instance, TaskSpec, TaskUtility, load_task, task_names
from stop.scoring.utility import Target, UtilityOptions, builtin_utilities, load_utility


def _task_modules() -> dict[str, ModuleType]:
    modules = {}
    for name in builtin_utilities():
        module = importlib.import_module(f"utilities.{name}")
        if isinstance(getattr(module, "SPEC", None), TaskSpec):
            modules[name] = module
    return modules


TASKS = _task_modules()
NAMES = sorted(TASKS)


@functools.cache
def utility(name: str) -> TaskUtility:
    """One utility per task, shared: building one generates both splits."""
    return TaskUtility(TASKS[name].SPEC, 5)


@functools.cache
def seed_score(name: str) -> float:
    evaluation = utility(name).evaluate(TASKS[name].SPEC.seed_solution)
    assert evaluation.status == "ok", evaluation
    return evaluation.score


# Known-good solutions, written for these tests.
REFERENCES = {
    "lpn": """import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    # Brute force: the subset of bits whose parity disagrees least with the training labels.
    x, y = np.array(train_samples), np.array(train_parity)
    n = x.shape[1]
    masks = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
    errors = ((x @ masks.T) % 2 != y[:, None]).sum(axis=0)
    best = masks[int(np.argmin(errors))]
    return (np.array(test_samples) @ best) % 2
""",
    "parity": """def algorithm(train_samples, train_parity, test_samples):
    # Gaussian elimination over GF(2) on the augmented rows [sample | label].
    n = len(train_samples[0])
    rows = [list(s) + [y] for s, y in zip(train_samples, train_parity)]
    pivots, r = [], 0
    for c in range(n):
        p = next((i for i in range(r, len(rows)) if rows[i][c]), None)
        if p is None:
            continue
        rows[r], rows[p] = rows[p], rows[r]
        for i in range(len(rows)):
            if i != r and rows[i][c]:
                rows[i] = [a ^ b for a, b in zip(rows[i], rows[r])]
        pivots.append(c)
        r += 1
    w = [0] * n
    for i, c in enumerate(pivots):
        w[c] = rows[i][n]
    return [sum(a * b for a, b in zip(s, w)) % 2 for s in test_samples]
""",
    "string_grid": """def algorithm(t, dist):
    # Dynamic programming over (position, last letter) -> reachable partial distances.
    n = len(t)
    need = dist - sum(a != b for a, b in zip(t, t[1:]))
    reach = [{c: {int(c != t[0])} for c in "AB"}]
    for i in range(1, n):
        reach.append(
            {c: {v + (c != t[i]) + (c != p) for p in "AB" for v in reach[-1][p]} for c in "AB"}
        )
    ends = [c for c in "AB" if need in reach[-1][c]]
    if not ends:
        return t
    c, s = ends[0], [ends[0]]
    for i in range(n - 1, 0, -1):
        need -= c != t[i]
        p = next(p for p in "AB" if need - (c != p) in reach[i - 1][p])
        need -= c != p
        c = p
        s.append(c)
    return "".join(reversed(s))
""",
    "three_sat": """import random
import time


def algorithm(formula):
    # WalkSAT with incremental counts of true literals per clause.
    start = time.perf_counter()
    rnd = random.Random(1)
    n = max(abs(lit) for clause in formula for lit in clause)
    value = [False] + [rnd.random() < 0.5 for _ in range(n)]
    occurs = [[] for _ in range(n + 1)]
    for ci, clause in enumerate(formula):
        for lit in clause:
            occurs[abs(lit)].append((ci, lit > 0))
    true_count = [sum(value[abs(lit)] == (lit > 0) for lit in c) for c in formula]
    unsat = [ci for ci, k in enumerate(true_count) if k == 0]
    where = {ci: i for i, ci in enumerate(unsat)}

    def drop(ci):
        i, last = where.pop(ci), unsat.pop()
        if last != ci:
            unsat[i], where[last] = last, i

    def breaks(v):
        return sum(1 for ci, pos in occurs[v] if true_count[ci] == 1 and value[v] == pos)

    def flip(v):
        value[v] = not value[v]
        for ci, pos in occurs[v]:
            if value[v] == pos:
                true_count[ci] += 1
                if true_count[ci] == 1:
                    drop(ci)
            else:
                true_count[ci] -= 1
                if true_count[ci] == 0:
                    where[ci] = len(unsat)
                    unsat.append(ci)

    steps = 0
    while unsat and (steps % 256 or time.perf_counter() - start < 0.07):
        steps += 1
        variables = [abs(lit) for lit in formula[rnd.choice(unsat)]]
        cost = [breaks(v) for v in variables]
        if min(cost) > 0 and rnd.random() < 0.5:
            flip(rnd.choice(variables))
        else:
            flip(variables[cost.index(min(cost))])
    return value
""",
    "maxcut": """import numpy as np


def algorithm(adjacency_matrix):
    # Greedy start and random restarts, each improved by best-gain single flips.
    w = np.asarray(adjacency_matrix, dtype=np.float64)
    n = len(w)
    rng = np.random.default_rng(0)

    def improve(sign):
        gain = sign * (w @ sign)
        while True:
            i = int(np.argmax(gain))
            if gain[i] <= 0:
                break
            sign[i] = -sign[i]
            gain += 2.0 * sign * sign[i] * w[i]
            gain[i] = -gain[i]
        return (w.sum() - sign @ w @ sign) / 4.0, sign

    sign = np.ones(n)
    for i in range(1, n):
        sign[i] = -1.0 if w[i, :i] @ sign[:i] > 0 else 1.0
    best = improve(sign)
    for _ in range(10):
        candidate = improve(rng.choice([-1.0, 1.0], size=n))
        if candidate[0] > best[0]:
            best = candidate
    return (best[1] < 0).astype(int)
""",
    "quadratic_assignment": """import time

import numpy as np


def algorithm(F, D, P):
    # Batches of 8 best-improvement pairwise-swap local searches from random starts, for
    # about 0.15 s; the best assignment found wins.
    start = time.perf_counter()
    f, d, p = (np.asarray(m, dtype=np.float64) for m in (F, D, P))
    n, runs = len(f), 8
    r, s = np.triu_indices(n, 1)
    k = np.arange(len(r))
    rows = np.arange(runs)
    rng = np.random.default_rng(0)

    def costs(a):
        flows = (f * d[a[:, :, None], a[:, None, :]]).sum(axis=(1, 2))
        return flows - 0.5 * p[np.arange(n), a].sum(axis=1)

    best, best_cost = None, np.inf
    while best is None or time.perf_counter() - start < 0.15:
        a = np.array([rng.permutation(n) for _ in range(runs)])
        while True:
            neighbours = np.repeat(a[:, None, :], len(r), axis=1)
            neighbours[:, k, r] = a[:, s]
            neighbours[:, k, s] = a[:, r]
            c = costs(neighbours.reshape(-1, n)).reshape(runs, len(r))
            step = c.argmin(axis=1)
            better = c[rows, step] < costs(a) - 1e-12
            if not better.any():
                break
            a[better] = neighbours[rows[better], step[better]]
        final = costs(a)
        if final.min() < best_cost:
            best, best_cost = a[int(np.argmin(final))], final.min()
    return best
""",
}

# What each reference must reach on the validation split (where the optimum is known:
# 1; max-cut and quadratic assignment are scored against a host local search).
REFERENCES["sandbox_probe"] = REFERENCES["lpn"]  # lpn with bait in its description

REFERENCE_FLOOR = {
    "lpn": 0.9,
    "sandbox_probe": 0.9,
    "parity": 1.0,
    "string_grid": 1.0,
    "three_sat": 1.0,
    "maxcut": 0.98,
    "quadratic_assignment": 0.93,
}


def test_the_tasks_are_found():
    expected = {"lpn", "parity", "string_grid", "three_sat", "maxcut", "quadratic_assignment"}
    assert expected <= set(NAMES)
    assert set(NAMES) <= set(REFERENCES), "every task needs a reference solution here"
    # The framework's own discovery finds the same tasks.
    assert task_names() == NAMES
    assert all(load_task(name) is TASKS[name].SPEC for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_instances_are_deterministic_json_data(name: str):
    spec = dataclasses.replace(TASKS[name].SPEC, val_size=3, test_size=3)
    val, test = spec.instances_of("val"), spec.instances_of("test")
    assert val == spec.instances_of("val") and test == spec.instances_of("test")
    assert val != test
    for instance in val + test:
        assert isinstance(instance, Instance)
        # Plain JSON data: a round trip changes nothing (no tuples, numpy values or NaN).
        for part in (instance.args, instance.answer):
            assert json.loads(json.dumps(part, allow_nan=False)) == part
    # The module's global random state plays no part.
    random.seed(1)
    first = spec.instances_of("val")
    random.seed(2)
    assert spec.instances_of("val") == first


@pytest.mark.parametrize("name", NAMES)
def test_spec_and_description(name: str):
    spec = TASKS[name].SPEC
    assert spec.name == name and TASKS[name].build == spec.build
    assert f"def {spec.entry}(" in spec.seed_solution
    assert f"`{spec.entry}(" in spec.description
    assert f"{spec.per_call_s:g} s" in spec.description  # the time limit is stated
    assert 0 < spec.val_size and 0 < spec.test_size
    compile(spec.seed_solution, "<seed>", "exec")


@pytest.mark.parametrize("name", NAMES)
def test_load_utility_builds_each_task(name: str, tmp_path: Path):
    target = Target(path=tmp_path / "solution.py", source=TASKS[name].SPEC.seed_solution)
    built = load_utility(name, target, UtilityOptions())
    assert isinstance(built, TaskUtility)
    assert built.name == name and built.budget == 0  # the host's to set, not the utility's
    assert built.description == TASKS[name].SPEC.description


@pytest.mark.parametrize("name", NAMES)
def test_seed_solution_scores_in_range(name: str):
    assert 0.0 < seed_score(name) <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_reference_solution_beats_the_seed(name: str):
    evaluation = utility(name).evaluate(REFERENCES[name])
    assert evaluation.status == "ok", evaluation
    assert evaluation.metrics["failed"] == 0, evaluation
    assert evaluation.score >= REFERENCE_FLOOR[name]
    assert evaluation.score > seed_score(name)


# Outputs no scorer may credit.
COMMON_HOSTILE: list[Any] = [
    None,
    0,
    1.5,
    True,
    "nan",
    "AB",
    {},
    {"0": 1},
    [],
    [[]],
    [None],
]


def _hostile(name: str, instance: Instance) -> list[Any]:
    """Outputs of the right general kind but the wrong form, for one instance."""
    nan = float("nan")
    if name in ("lpn", "parity", "sandbox_probe"):
        labels = instance.answer
        k = len(labels)
        wrong = [1 - y for y in labels]
        return [
            wrong,  # well-formed, all wrong: still 0
            [[y] for y in labels],  # shape (k, 1)
            [labels],  # shape (1, k)
            labels[:-1],
            labels + [0],
            [str(y) for y in labels],
            ["nan"] * k,
            [nan] * k,
            [labels[0], [labels[1]], *labels[2:]],
        ]
    if name == "string_grid":
        t = instance.answer["t"]
        n = len(t)
        return [list(t), t + "A", t[:-1], "C" * n, "a" * n, [t], "nan", t.encode().hex()]
    if name == "three_sat":
        formula = instance.answer
        n = max(abs(lit) for clause in formula for lit in clause)
        values = [i % 2 == 0 for i in range(n + 1)]
        return [
            values[1:],  # too short: the unused entry 0 left out
            values + [True],
            [[v] for v in values],
            [values],
            [float(v) for v in values],
            ["nan"] * (n + 1),
            [nan] * (n + 1),
            [str(v) for v in values],
            [2 if v else 0 for v in values],
            [1 if v else -1 for v in values],
            [*values[:-1], None],
        ]
    if name == "maxcut":
        n = len(instance.answer["matrix"])
        labels = [i % 2 for i in range(n)]
        return [
            labels[:-1],
            labels + [0],
            [[x] for x in labels],
            [labels],
            [2 * x for x in labels],
            [x - 1 for x in labels],
            [0.5] * n,
            ["nan"] * n,
            [nan] * n,
            [str(x) for x in labels],
            [0] * n,  # a valid but empty cut
        ]
    if name == "quadratic_assignment":
        n = len(instance.answer["matrices"][0])
        perm = list(range(n))
        return [
            [0] * n,
            perm[:-1],
            perm + [n],
            list(range(1, n + 1)),
            [-1, *perm[1:]],
            [float(i) for i in perm],
            [[i] for i in perm],
            [perm],
            ["nan"] * n,
            [nan] * n,
            [str(i) for i in perm],
            [True, False, *perm[2:]],
            perm[:-2] + [perm[-2], perm[-2]],
        ]
    raise AssertionError(f"no hostile outputs for {name}")


@pytest.mark.parametrize("name", NAMES)
def test_hostile_outputs_score_zero(name: str):
    spec = dataclasses.replace(TASKS[name].SPEC, val_size=3)
    for instance in spec.instances_of("val"):
        for output in COMMON_HOSTILE + _hostile(name, instance):
            value = spec.score(instance, output)
            assert value == 0.0 and type(value) is float, (name, output, value)


@pytest.mark.parametrize("name", NAMES)
def test_scores_lie_in_unit_interval(name: str):
    """Random outputs of the right form score within [0, 1], never NaN."""
    spec = dataclasses.replace(TASKS[name].SPEC, val_size=3)
    rnd = random.Random(0)
    for instance in spec.instances_of("val"):
        for _ in range(20):
            value = spec.score(instance, _random_output(name, instance, rnd))
            assert type(value) is float and math.isfinite(value) and 0.0 <= value <= 1.0


def _random_output(name: str, instance: Instance, rnd: random.Random) -> Any:
    if name in ("lpn", "parity", "sandbox_probe"):
        return [rnd.randint(0, 1) for _ in instance.answer]
    if name == "string_grid":
        return "".join(rnd.choice("AB") for _ in instance.answer["t"])
    if name == "three_sat":
        n = max(abs(lit) for clause in instance.answer for lit in clause)
        return [rnd.random() < 0.5 for _ in range(n + 1)]
    if name == "maxcut":
        return [rnd.randint(0, 1) for _ in instance.answer["matrix"]]
    if name == "quadratic_assignment":
        perm = list(range(len(instance.answer["matrices"][0])))
        rnd.shuffle(perm)
        return perm
    raise AssertionError(name)


# Any JSON value, as a sandboxed solution's output arrives (NaN and infinities as strings).
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["nan", "inf", "A", "B", "AB", "0", "1"])
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=40) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(output=JSON, which=st.integers(0, 2))
def test_scorers_never_raise_on_json(name: str, output: Any, which: int):
    instance = _small_instances(name)[which]
    value = TASKS[name].SPEC.score(instance, output)
    assert type(value) is float and 0.0 <= value <= 1.0


@functools.cache
def _small_instances(name: str) -> list[Instance]:
    return dataclasses.replace(TASKS[name].SPEC, val_size=3).instances_of("val")


def test_string_grid_scoring_follows_stop():
    from utilities.string_grid import grid_dist, score

    assert grid_dist("AB", "BB") == 1 + 1 + 0
    assert grid_dist("ABA", "BAB") == 3 + 2 + 2
    instance = Instance(args=["AAAA", 3], answer={"t": "AAAA", "dist": 3})
    assert score(instance, "ABAA") == 1.0  # 1 differing column + 2 changes in s
    assert score(instance, "AAAA") == pytest.approx(0.5 - 3 / 24)
    assert score(instance, "ABAB") == pytest.approx(0.5 - 2 / 24)  # distance 5


def test_three_sat_checks_the_formula():
    from utilities.three_sat import score

    formula = [[1, 2, 3], [-1, -2, 3], [1, -2, -3]]
    instance = Instance(args=[formula], answer=formula)
    assert score(instance, [False, True, False, True]) == 1.0
    assert score(instance, [False, True, True, False]) == 0.0  # breaks clause 2
    assert score(instance, [0, 1, 0, 1]) == 1.0
    assert score(instance, [False, True, False]) == 0.0  # too short


def test_maxcut_reference_is_a_real_cut():
    from utilities.maxcut import score

    spec = dataclasses.replace(TASKS["maxcut"].SPEC, val_size=2)
    for instance in spec.instances_of("val"):
        matrix, reference = instance.answer["matrix"], instance.answer["reference"]
        n = len(matrix)
        assert all(matrix[i][j] == matrix[j][i] for i in range(n) for j in range(n))
        assert all(matrix[i][i] == 0 for i in range(n))
        total = sum(map(sum, matrix)) / 2
        assert total / 2 < reference <= total and reference == int(reference)
        alternating = [i % 2 for i in range(n)]
        assert 0.5 < score(instance, alternating) < 1.0
        assert score(instance, alternating) == score(instance, [1 - x for x in alternating])


def test_quadratic_assignment_normalization():
    import numpy as np

    from utilities.quadratic_assignment import _cost, score

    spec = dataclasses.replace(TASKS["quadratic_assignment"].SPEC, val_size=1)
    (instance,) = spec.instances_of("val")
    f, d, p = (np.array(m) for m in instance.answer["matrices"])
    rnd = np.random.default_rng(0)
    perms = np.array([rnd.permutation(len(f)) for _ in range(4000)])
    costs = _cost(f, d, p, perms)
    # R is the exact mean over permutations; the reference beats every random one.
    assert costs.mean() == pytest.approx(instance.answer["random"], rel=0.01)
    assert instance.answer["reference"] < costs.min()
    mean_score = np.mean([score(instance, [int(x) for x in q]) for q in perms[:300]])
    assert mean_score < 0.2
