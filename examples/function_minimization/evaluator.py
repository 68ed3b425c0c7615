"""Runs the search five times and scores how close it gets to the global minimum
(value about -1.519 near x=-1.704, y=0.678) and how consistently."""

import importlib.util
import time

import numpy as np

GLOBAL_MIN = (-1.704, 0.678, -1.519)


def _load(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    return program


def evaluate(program_path):
    program = _load(program_path)
    distances, values, seconds = [], [], []
    for trial in range(5):
        start = time.perf_counter()
        try:
            x, y, value = program.run_search()
        except Exception as exc:
            print(f"trial {trial} failed: {exc}")
            continue
        seconds.append(time.perf_counter() - start)
        distances.append(float(np.hypot(x - GLOBAL_MIN[0], y - GLOBAL_MIN[1])))
        values.append(float(value))
    if not values:
        return {"combined_score": 0.0, "error": "every trial failed"}
    value_score = 1.0 / (1.0 + abs(np.mean(values) - GLOBAL_MIN[2]))
    distance_score = 1.0 / (1.0 + np.mean(distances))
    reliability = len(values) / 5
    return {
        "value_score": float(value_score),
        "distance_score": float(distance_score),
        "reliability": reliability,
        "seconds": float(np.mean(seconds)),
        "combined_score": float(0.45 * value_score + 0.45 * distance_score + 0.1 * reliability),
    }
