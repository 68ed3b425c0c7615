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
