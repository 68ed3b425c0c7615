from stop.helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Samples widely, evaluates only what a learned reranker ranks highest (RewardRanker).

    Every completion the model budget allows is drawn; the host's reranker, trained on the
    candidates this run (or this self-improvement run) has scored, orders them, and the
    utility budget is spent from the top. Until the reranker has data, the order is the
    model's own.
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

You must return an improved solution, complete, in one code block."""
    candidates = []
    while language_model.budget > 0:
        n = min(language_model.max_responses_per_call, language_model.budget)
        replies = language_model.batch_prompt(expertise, [message] * n, temperature=0.9)
        candidates += extract_code(replies)
    candidates = [
        c
        for c in dict.fromkeys(c.strip() + "\n" for c in candidates)
        if c.strip() != initial_solution.strip()
    ]
    best, best_score = initial_solution, utility(initial_solution)
    for index in utility.rank(candidates) if candidates else []:
        if utility.budget - utility.uses < 1:
            break
        score = utility(candidates[index])
        if score > best_score:
            best, best_score = candidates[index], score
    return best
