from stop.scoring.task import Instance, TaskSpec


def score(instance, picked):
    weights, values, capacity = instance.args
    if sum(weights[i] for i in set(picked)) > capacity:
        return 0.0, "the items weigh more than the capacity"
    return sum(values[i] for i in set(picked)) / instance.answer


about = "pack(weights, values, capacity) returns the indices of the items to take (weights "
about += "summing to at most capacity). Score: their total value over the best possible."
items = [Instance([[9, 3, 4, 5], [11, 4, 5, 7], 12], 16), Instance([[3, 1, 2], [1, 3, 2], 3], 5)]
SPEC = TaskSpec(name="knapsack", entry="pack", score=score, description=about, instances=items)
build = SPEC.build
