"""Fixtures shared by the tests (plain helpers live in tests/helpers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def script(tmp_path: Path):
    """Write a scripted model's replies to a file and return its path."""

    def write(replies: list[str]) -> Path:
        path = tmp_path / "script.json"
        path.write_text(json.dumps(replies))
        return path

    return write


@pytest.fixture
def scripted_model():
    """A scripted backend instance to hand to a loop (stop.wiring.Run(backend=...)): it
    answers from `replies` and records every prompt it is asked (`.prompts`)."""
    from stop.llm.scripted import ScriptedBackend

    return lambda replies: ScriptedBackend(list(replies))
