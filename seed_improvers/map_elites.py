import random

from stop.errors import BudgetExhausted
from stop.helpers import EDIT_INSTRUCTIONS

# Behaviour descriptors, each relative to the initial solution: code length (non-blank
# lines) and evaluation time. Bin edges are ratios to the initial's value.
EDGES = (0.5, 0.8, 1.25, 2.0)


def improve_algorithm(initial_solution, utility, language_model):
    """MAP-Elites (OpenELM-style): an archive of the best program per behaviour cell.

    Cells are code length x evaluation time, both relative to the initial solution. Each
    request mutates an elite chosen at random (the model answers with edits or a whole
    program); a child takes its cell if the cell is empty or it beats the occupant. The
    archive is saved with the run (records/archive.json); the best elite is returned.

    Steady state: `max_in_flight` requests are kept outstanding, a new one sent as soon as
    one comes back, and each child is evaluated while the model works, so neither a slow
    reply nor a slow evaluation holds the others back.
    """
    expertise = (
        "You are an expert computer science researcher and programmer who explores many "
        "different ways to solve a problem."
    )
    rng = random.Random(0)
    first = utility.evaluate(initial_solution)
    base = (_lines(initial_solution), max(first.get("seconds") or 0.0, 1e-3))
    archive = {}  # cell -> elite
    evaluations = 1
    _place(archive, initial_solution, first, base, order=0)
    seen = {initial_solution.strip()}
    width = getattr(language_model, "max_in_flight", language_model.max_responses_per_call)
    pending = []
    asking = True

    def ask():
        nonlocal asking
        while asking and (replies := sum(p.kind == "reply" for p in pending)) < width:
            # A reply on its way may still spend an evaluation (those submitted are spent).
            if language_model.budget < 1 or utility.budget - utility.uses - replies < 1:
                asking = False
                break
            parent = archive[rng.choice(sorted(archive))]
            message = _prompt(parent, utility.str)
            try:
                pending.append(
                    language_model.submit(expertise, message, 1.0, program=parent["program"])
                )
            except BudgetExhausted:
                asking = False

    ask()
    while pending:
        done = language_model.wait(pending)
        pending.remove(done)
        if done.kind == "evaluation":
            _place(archive, done.tag[1], done.result, base, order=done.tag[0])
        elif done.result and done.result.strip() not in seen and utility.budget > utility.uses:
            seen.add(done.result.strip())
            evaluations += 1
            pending.append(utility.submit(done.result, tag=(evaluations, done.result)))
        ask()
    utility.record(
        "archive",
        {
            "descriptors": ["lines / initial", "seconds / initial"],
            "edges": list(EDGES),
            "evaluations": evaluations,
            "cells": [archive[c] for c in sorted(archive)],
        },
    )
    # The best elite; among equals the earliest, so the input wins ties.
    return max(archive.values(), key=lambda e: (e["score"], -e["order"]))["program"]


def _lines(program):
    return max(1, sum(1 for line in program.splitlines() if line.strip()))


def _bin(ratio):
    return sum(ratio > edge for edge in EDGES)


def _place(archive, program, result, base, order):
    if result["status"] != "ok":
        return  # a failed program has no behaviour worth keeping
    lines, seconds = _lines(program), max(result.get("seconds") or 0.0, 1e-3)
    cell = (_bin(lines / base[0]), _bin(seconds / base[1]))
    elite = archive.get(cell)
    if elite is None or result["score"] > elite["score"]:
        archive[cell] = {
            "cell": list(cell),
            "score": result["score"],
            "lines": lines,
            "seconds": round(seconds, 4),
            "order": order,
            "program": program,
        }


def _prompt(parent, description):
    return f"""Here is a solution (score {parent["score"]:.4g}):
```python
{parent["program"]}
```

You will be evaluated based on this score function:
```
{description}
```

Write a variation that takes a different approach: shorter or longer, faster or simpler,
another algorithm. It must still be correct. {EDIT_INSTRUCTIONS}"""
