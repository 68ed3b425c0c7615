from stop.errors import BudgetExhausted
from stop.helpers import EDIT_INSTRUCTIONS


def improve_algorithm(initial_solution, utility, language_model):
    """Refines with feedback (LangProp-style): propose, evaluate, show what failed, repeat.

    Keeps a ranked set of the best programs; each request shows the best known program to
    the model with its score, the failures the utility reported (inputs, expected and
    actual outputs, exceptions, timeouts) and what went wrong with the latest attempts to
    improve it. Stops when a budget is spent or `patience` proposals per request in flight
    in a row bring no gain (a repeated or unusable reply counts as one).

    Steady state: `max_in_flight` requests or their evaluations are kept outstanding, a
    new request sent as soon as one's evaluation is in (its prompt shows it), and the
    others go on meanwhile.
    """
    expertise = (
        "You are an expert computer science researcher and programmer, "
        "especially skilled at finding and fixing what makes a program fail or score low."
    )
    keep, patience = 3, 2
    first = utility.evaluate(initial_solution)
    ranked = [(first["score"], 0, initial_solution, first)]  # (score, age, program, result)
    seen = {initial_solution.strip()}
    width = getattr(language_model, "max_in_flight", language_model.max_responses_per_call)
    stale, age, attempts, pending = 0, 0, [], []
    spent = False

    def ask():
        # An evaluation holds its request's place: the next request is built from what it
        # shows (a request sent meanwhile would miss the feedback it is for).
        nonlocal spent
        while not spent and len(pending) < width and stale < patience * width:
            replies = sum(p.kind == "reply" for p in pending)
            # A reply on its way may still spend an evaluation (those submitted are spent).
            if language_model.budget < 1 or utility.budget - utility.uses - replies < 1:
                spent = True
                return
            score, _, program, result = ranked[0]
            message = _prompt(program, score, result, attempts[-width:], utility.str)
            try:
                pending.append(language_model.submit(expertise, message, 0.7, program=program))
            except BudgetExhausted:
                spent = True

    ask()
    while pending:
        done = language_model.wait(pending)
        pending.remove(done)
        if done.kind == "evaluation":
            outcome, (proposal_age, proposal) = done.result, done.tag
            if outcome["score"] > ranked[0][0]:
                stale, attempts = 0, []
            else:
                stale += 1
                attempts.append(outcome)  # shown next: what went wrong with them
            ranked.append((outcome["score"], proposal_age, proposal, outcome))
            # Best first; among equals the older program, so the input wins ties.
            ranked = sorted(ranked, key=lambda r: (-r[0], r[1]))[:keep]
        elif done.result and done.result.strip() not in seen and utility.budget > utility.uses:
            seen.add(done.result.strip())
            age += 1
            pending.append(utility.submit(done.result, tag=(age, done.result)))
        else:
            stale += 1  # nothing new: no gain either
        ask()
    return ranked[0][2]


def _failures(results):
    lines = []
    for result in results:
        for failure in result.get("feedback") or []:
            parts = [failure["kind"].replace("_", " ")]
            if failure.get("input") is not None:
                parts.append(f"input {failure['input']}")
            if failure.get("expected") is not None:
                parts.append(f"expected {failure['expected']}")
            if failure.get("actual") is not None:
                parts.append(f"got {failure['actual']}")
            if failure.get("message"):
                parts.append(failure["message"])
            lines.append("- " + "; ".join(parts))
    return "\n".join(dict.fromkeys(lines[:6]))


def _prompt(program, score, result, attempts, description):
    own = _failures([result]) or "- none reported: it works, but a higher score is possible"
    tried = _failures(attempts)
    tried = (
        f"\nYour last attempts to improve it did worse. What went wrong:\n{tried}\n"
        if tried
        else ""
    )
    return f"""Improve the following solution:
```python
{program}
```

It scores {score:.4g} ({result.get("status")}). What went wrong when it was evaluated:
{own}
{tried}
You will be evaluated based on this score function:
```
{description}
```

Fix what failed first, then make it score higher. {EDIT_INSTRUCTIONS}"""
