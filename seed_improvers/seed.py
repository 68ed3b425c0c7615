from stop.helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Improves a solution according to a utility function (STOP's seed improver).

    One difference from STOP: the initial solution competes too, so the result is never
    worse than the input.
    """
    expertise = (
        "You are an expert computer science researcher and programmer, "
        "especially skilled at optimizing algorithms."
    )
    message = f"""Improve the following solution:
```python
{initial_solution}
```

You will be evaluated based on this score function:
```
{utility.str}
```

You must return an improved solution. Be as creative as you can under the constraints.
Your primary improvement must be novel and non-trivial. First, propose an idea, then implement it."""  # noqa: E501 - STOP's prompt, verbatim
    # One evaluation is kept for the initial solution.
    n_messages = min(language_model.max_responses_per_call, utility.budget - 1)
    if n_messages < 1:
        return initial_solution
    new_solutions = language_model.batch_prompt(expertise, [message] * n_messages, temperature=0.7)
    new_solutions = extract_code(new_solutions)
    # Identical rewrites would spend evaluations for nothing.
    candidates = list(dict.fromkeys(s.strip() + "\n" for s in [initial_solution, *new_solutions]))
    candidates[0] = initial_solution
    return max(candidates, key=utility)
