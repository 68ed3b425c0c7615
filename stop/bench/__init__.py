"""The benchmark suite behind `stop bench`: each figure is measured against its baseline
in the same run on the same machine. Suites live one per module; heavy imports stay
inside them so that `stop bench sandbox` does not load the language model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Figure(BaseModel):
    """One measurement: ratio > 1 means stop is better than its baseline."""

    model_config = ConfigDict(extra="forbid")

    name: str
    baseline: float
    value: float
    unit: str
    ratio: float


def figure(name: str, baseline: float, value: float, unit: str, higher_is_better: bool) -> Figure:
    """A Figure whose ratio reads "times better": value/baseline for rates,
    baseline/value for costs (seconds, milliseconds)."""
    ratio = value / baseline if higher_is_better else baseline / value
    return Figure(
        name=name,
        baseline=round(baseline, 4),
        value=round(value, 4),
        unit=unit,
        ratio=round(ratio, 2),
    )
