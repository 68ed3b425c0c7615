from stop.scoring.task import Instance, TaskSpec

def score(instance, picked):
    weights, values, capacity = instance.args
    if sum(weights[i] for i in set(picked)) > capacity:
        return 0.0, "the items weigh more than the capacity"
    return sum(values[i] for i in set(picked)) / instance.answer

SPEC = TaskSpec(name="knapsack", entry="pack", score=score, description=(
    "pack(weights, values, capacity) returns the indices of the items to take, whose weights "
    "may sum to at most capacity. Score: their total value over the best possible total."),
    instances=[Instance([[3, 4, 5, 9], [4, 5, 7, 11], 12], 16),
               Instance([[5, 4, 6, 3, 2, 7], [10, 40, 30, 50, 15, 35], 10], 105)])
build = SPEC.build
