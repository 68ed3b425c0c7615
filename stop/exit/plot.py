"""Learning curves: % of test tasks solved against total FLOPs, one line per run
(labelled by its search setting), as a PNG (matplotlib, Agg) and a terminal chart
(plotext). Reads each run's history.json, so it needs no torch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stop.errors import BadInput

HISTORY_NAME = "history.json"


@dataclass
class Curve:
    label: str
    flops: list[float]
    percent_solved: list[float]


def _label(config: dict) -> str:
    if config.get("search") == "mcts":
        setting = f"mcts {config.get('rollouts')}x{config.get('simulations')} sims"
    else:
        setting = f"sf {config.get('rollouts')} rollouts"
    family = config.get("family", "?")
    tasks = f"add-{config.get('max_n')}" if family == "add" else f"random x{config.get('count')}"
    return f"{tasks} {setting}"


def load_curves(paths: list[Path]) -> list[Curve]:
    curves = []
    for path in paths:
        file = path / HISTORY_NAME if path.is_dir() else path.parent / HISTORY_NAME
        try:
            summary = json.loads(file.read_text())
            config, history = summary["config"], summary["history"]
            flops = [float(r["flops_total"]) for r in history]
            solved = [100.0 * float(r["solved_fraction"]) for r in history]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{path}: no readable run history ({file})") from exc
        curves.append(Curve(_label(config), flops, solved))
    return curves


def plot_png(curves: list[Curve], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for curve in curves:
        ax.plot(curve.flops, curve.percent_solved, marker=".", label=curve.label)
    ax.set_xscale("log")
    ax.set_xlabel("total FLOPs (search + train)")
    ax.set_ylabel("% test tasks solved (greedy)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(out)
    except OSError as exc:
        raise BadInput(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)


def plot_terminal(curves: list[Curve], width: int = 80, height: int = 20) -> str:
    import math

    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    for curve in curves:
        xs = [math.log10(max(f, 1.0)) for f in curve.flops]
        plt.plot(xs, curve.percent_solved, label=curve.label)
    plt.xlabel("log10 total FLOPs")
    plt.ylabel("% solved")
    plt.ylim(0, 100)
    return plt.build()
