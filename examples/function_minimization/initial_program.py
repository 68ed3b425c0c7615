"""Random search for the minimum of a bumpy function of two variables."""

import numpy as np


# EVOLVE-BLOCK-START
def search_algorithm(iterations=100, bounds=(-5.0, 5.0)):
    """Sample points at random; keep the lowest."""
    best_x, best_y = np.random.uniform(bounds[0], bounds[1], size=2)
    best_value = evaluate_function(best_x, best_y)
    for _ in range(iterations):
        x, y = np.random.uniform(bounds[0], bounds[1], size=2)
        value = evaluate_function(x, y)
        if value < best_value:
            best_x, best_y, best_value = x, y, value
    return float(best_x), float(best_y), float(best_value)


# EVOLVE-BLOCK-END


def evaluate_function(x, y):
    """The function to minimize: several local minima, one global one."""
    return np.sin(x) * np.cos(y) + np.sin(x * y) + (x**2 + y**2) / 20


def run_search():
    return search_algorithm()
