def pack(weights, values, capacity):
    """Take the items in order while they fit."""
    picked, load = [], 0
    for i, weight in enumerate(weights):
        if load + weight <= capacity:
            picked.append(i)
            load += weight
    return picked
