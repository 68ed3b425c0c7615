"""Random 3-SAT: one of STOP's downstream tasks.

A formula has n variables (n from 5 to 50) and 4 n clauses. Each clause takes three
distinct variables, each negated with probability 1/2, and is kept only if a hidden
random assignment satisfies it, so every formula is satisfiable. Literals are nonzero
ints: v means variable v is true, -v that it is false.

The solution returns an assignment indexed by variable number: a list of length N + 1,
where N is the largest variable number in the formula, entry 0 unused (STOP's format).
Score: the fraction of formulas whose returned assignment satisfies every clause. STOP
gave an unsolved formula 0.01 and floored the total at 0.01; here an unsolved formula
scores 0, so the score is exactly the fraction solved. Each entry must be a bool (or
the int 0 or 1); any other output scores 0 for that formula. 30 validation and 60 test
formulas; 0.1 s each.

The seed is STOP's random walk: up to 1000 flips of a variable from a random unsatisfied
clause, a random one with probability 0.4, else the literal that satisfies the fewest of
the clauses containing it. That count is 0 for every literal of an unsatisfied clause, so
the "greedy" flip takes the clause's first literal; the seed keeps this as STOP had it.
"""

from __future__ import annotations

import random
from typing import Any

from stop.scoring.task import Instance, TaskSpec

MIN_VARS, MAX_VARS, CLAUSES_PER_VAR = 5, 50, 4

SEED_SOLUTION = """import random


def random_walk_solver(formula, max_iter, p):
    n = max(abs(lit) for clause in formula for lit in clause)
    value = [False] * (n + 1)

    def is_true(lit):
        return value[abs(lit)] == (lit > 0)

    def times_satisfying(lit):
        # how many of the clauses that contain lit it currently satisfies
        return sum(is_true(lit) for clause in formula if lit in clause)

    for _ in range(max_iter):
        unsatisfied = [clause for clause in formula if not any(map(is_true, clause))]
        if not unsatisfied:
            return value
        clause = random.choice(unsatisfied)
        if random.random() < p:
            lit = random.choice(clause)
        else:
            lit = min(clause, key=times_satisfying)
        value[abs(lit)] = not value[abs(lit)]
    return None


def algorithm(formula):
    return random_walk_solver(formula, max_iter=1000, p=0.4)
"""

DESCRIPTION = f"""Random 3-SAT. `algorithm(formula)` gets a satisfiable 3-SAT formula: a list of
clauses, each a list of exactly 3 nonzero ints (literals) over distinct variables; literal v
means "variable v is true", -v means "variable v is false". Variables are numbered from 1;
a formula has {MIN_VARS} to {MAX_VARS} variables and {CLAUSES_PER_VAR} times as many clauses,
and a hidden random assignment satisfies all of them. Return an assignment indexed by
variable number: a list of length N + 1, where N is the largest variable number that occurs in
the formula (max(abs(lit) for clause in formula for lit in clause)); entry v is True or False
(the ints 1 and 0 are accepted too) and entry 0 is ignored but must also be True/False/0/1.
Score per formula: 1 if the assignment satisfies every clause, else 0; also 0 for an assignment
of another length or with other entries, a crash, or more than 0.1 s. The task score is the
fraction of formulas satisfied, over many formulas."""


def make_instance(rng: random.Random) -> Instance:
    n = rng.randint(MIN_VARS, MAX_VARS)
    hidden = [False] + [rng.random() < 0.5 for _ in range(n)]
    formula: list[list[int]] = []
    while len(formula) < CLAUSES_PER_VAR * n:
        clause = [v if rng.random() < 0.5 else -v for v in rng.sample(range(1, n + 1), 3)]
        if any(hidden[abs(lit)] == (lit > 0) for lit in clause):
            formula.append(clause)
    return Instance(args=[formula], answer=formula)


def score(instance: Instance, output: Any) -> float:
    formula = instance.answer
    n = max(abs(lit) for clause in formula for lit in clause)
    if type(output) is not list or len(output) != n + 1:
        return 0.0
    # Exact bools, or the ints 0 and 1: no floats, strings or nested lists.
    if not all(type(x) is bool or (type(x) is int and x in (0, 1)) for x in output):
        return 0.0
    value = [bool(x) for x in output]
    return float(all(any(value[abs(lit)] == (lit > 0) for lit in clause) for clause in formula))


SPEC = TaskSpec(
    name="three_sat",
    entry="algorithm",
    seed_solution=SEED_SOLUTION,
    description=DESCRIPTION,
    per_call_s=0.1,
    val_size=30,
    test_size=60,
    make_instance=make_instance,
    score=score,
)
build = SPEC.build
