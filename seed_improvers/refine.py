from stop.helpers import EDIT_INSTRUCTIONS


def improve_algorithm(initial_solution, utility, language_model):
    """Refines with feedback (LangProp-style): propose, evaluate, show what failed, repeat.

    Keeps a ranked set of the best programs; each round the best is shown to the model with
    its score and the failures the utility reported (inputs, expected and actual outputs,
    exceptions, timeouts). Stops when a budget is spent or two rounds bring no gain.
    """
    expertise = (
        "You are an expert computer science researcher and programmer, "
        "especially skilled at finding and fixing what makes a program fail or score low."
    )
    keep, patience = 3, 2
    first = utility.evaluate(initial_solution)
    ranked = [(first["score"], 0, initial_solution, first)]  # (score, age, program, result)
    seen = {initial_solution.strip()}
    stale, age, attempts = 0, 0, []
    while utility.budget - utility.uses > 0 and language_model.budget > 0 and stale < patience:
        score, _, program, result = ranked[0]
        n = min(
            language_model.max_responses_per_call,
            language_model.budget,
            utility.budget - utility.uses,
        )
        message = _prompt(program, score, result, attempts, utility.str)
        proposals = language_model.batch_edit(expertise, program, [message] * n, temperature=0.7)
        improved, attempts = False, []
        for proposal in proposals:
            if not proposal or proposal.strip() in seen or utility.budget - utility.uses < 1:
                continue
            seen.add(proposal.strip())
            age += 1
            outcome = utility.evaluate(proposal)
            ranked.append((outcome["score"], age, proposal, outcome))
            improved = improved or outcome["score"] > score
            if outcome["score"] <= score:
                attempts.append(outcome)  # shown next round: what went wrong with them
        # Best first; among equals the older program, so the input wins ties.
        ranked = sorted(ranked, key=lambda r: (-r[0], r[1]))[:keep]
        stale = 0 if improved else stale + 1
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
