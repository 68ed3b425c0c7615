"""String grid distance: one of STOP's downstream tasks.

Two strings s and t of equal length over the letters A and B are the two rows of a
2 x n grid; their grid distance counts the unequal neighbouring cells of that grid:
the columns where s and t differ, plus the places where s changes letter, plus the
places where t changes letter. An instance draws a length from 1 to 30 and two random
strings s and t of that length; the solution gets t and d = grid_dist(s, t) (s stays
hidden, so a string at distance d exists) and must return any string at distance d
from t.

Scoring follows STOP: 1 for a string at exactly distance d; a string of the right
form at another distance d' scores 0.5 - |d' - d| / (6 n), between 0 and 0.5 (the
largest possible |d' - d| is 3 n - 2); anything that is not a string of n letters A
or B scores 0. 50 validation and 100 test instances; 1 s each (STOP's pool waited 1 s,
though its scorer also gave 0 to any call over 0.1 s). The seed, STOP's, returns t.
"""

from __future__ import annotations

import random
from typing import Any

from stop.scoring.task import Instance, TaskSpec

MIN_LEN, MAX_LEN = 1, 30

SEED_SOLUTION = """def algorithm(t, dist):
    return t
"""

DESCRIPTION = f"""String grid distance. Two strings s and t of the same length n over the letters
"A" and "B" form the two rows of a 2 x n grid. Their grid distance is
    grid_dist(s, t) = (number of positions i where s[i] != t[i])
                    + (number of i where s[i] != s[i + 1])
                    + (number of i where t[i] != t[i + 1]).
`algorithm(t, dist)` gets a string t of "A"s and "B"s ({MIN_LEN} <= n <= {MAX_LEN}) and an int dist,
and must return a str s of the same length n, made only of "A" and "B", with
grid_dist(s, t) == dist. Some such string always exists: dist is the grid distance from t of a
random string of length n. Score per instance: 1 if grid_dist(s, t) == dist; otherwise
0.5 - abs(grid_dist(s, t) - dist) / (6 * n), which lies between 0 and 0.5; 0 for anything that
is not a str of length n made of "A" and "B", for a crash, or for more than 1 s. The task score
is the mean over many instances."""


def grid_dist(s: str, t: str) -> int:
    across = sum(a != b for a, b in zip(s, t, strict=True))
    along = sum(a != b for x in (s, t) for a, b in zip(x, x[1:], strict=False))
    return across + along


def make_instance(rng: random.Random) -> Instance:
    length = rng.randint(MIN_LEN, MAX_LEN)
    t = "".join(rng.choice("AB") for _ in range(length))
    s = "".join(rng.choice("AB") for _ in range(length))
    dist = grid_dist(s, t)
    return Instance(args=[t, dist], answer={"t": t, "dist": dist})


def score(instance: Instance, output: Any) -> float:
    t, dist = instance.answer["t"], instance.answer["dist"]
    # Exact type and form: a str of len(t) letters, each "A" or "B".
    if type(output) is not str or len(output) != len(t) or set(output) - {"A", "B"}:
        return 0.0
    got = grid_dist(output, t)
    if got == dist:
        return 1.0
    return 0.5 - abs(got - dist) / (6 * len(t))


SPEC = TaskSpec(
    name="string_grid",
    entry="algorithm",
    seed_solution=SEED_SOLUTION,
    description=DESCRIPTION,
    per_call_s=1.0,
    val_size=50,
    test_size=100,
    make_instance=make_instance,
    score=score,
)
build = SPEC.build
