"""What the tests share that is not a fixture: the checkout's paths and the real `stop`
command line in a subprocess (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIB = ROOT / "examples" / "fib.py"
STOP = [sys.executable, "-m", "stop.cli"]


def run_stop(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the real `stop` command line in a subprocess."""
    # Hermetic: a developer's own server or key must not leak into the tests.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    full_env = {**inherited, **(env or {})}
    return subprocess.run(
        [*STOP, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def improve_run(config, backend=None):
    """`stop improve`'s loop on `config`, wired as the CLI wires it; `backend`: an instance
    (a ScriptedBackend) to use instead of the config's model settings."""
    from stop.improve import improve
    from stop.wiring import Run

    with Run(
        config.runs_dir,
        config.model,
        backend=backend,
        use_cache=config.use_cache,
        money=config.money,
    ) as run:
        return improve(run, config)


def self_improve_run(config, resume: str | None = None, backend=None):
    """`stop self-improve`'s loop: (the run's directory and id, its generations)."""
    from types import SimpleNamespace

    from stop.self_improve import self_improve
    from stop.wiring import Run

    with Run(config.runs_dir, config.model, backend=backend, money=config.money) as run:
        result = self_improve(run, config, resume=resume)
    return SimpleNamespace(dir=Path(result.run_dir), id=result.run_id), result.generations


def calibrated(utility, target, budget: int = 5):
    """A utility built by hand, calibrated and given a budget as a run does it."""
    utility.calibrate(target)
    utility.budget = budget
    return utility
