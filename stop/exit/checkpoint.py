"""Checkpoints: torch.save of the whole run state, written atomically, with the run's
config record inside so that an incompatible or corrupt file is rejected on load.

Loading uses `torch.load(weights_only=True)`: a checkpoint holds only tensors, numbers,
strings, lists and dicts, so loading one cannot run code.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from stop.errors import BadInput
from stop.exit.config import ExitConfig
from stop.records import FORMAT_VERSION
from stop.store import write_atomic

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, config: ExitConfig, state: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, "config": config.model_dump_json(), **state}
    # Serialised in memory first (a few MB at most), so the one atomic write of the run
    # store puts it on disk: a crash or Ctrl-C leaves the old checkpoint or the new one.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def resolve(path: Path) -> Path:
    """A checkpoint file, or a run directory holding one."""
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path: Path) -> tuple[ExitConfig, dict[str, Any]]:
    file = resolve(path)
    if not file.is_file():
        raise BadInput(f"no checkpoint at {path}")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a damaged file
        raise BadInput(f"{file} is not a readable checkpoint (corrupt or not ours)") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise BadInput(
            f"{file} was written in run format {version!r}, and this stop reads format "
            f"{FORMAT_VERSION}; use the stop version that made it"
        )
    try:
        config = ExitConfig.model_validate(json.loads(payload.pop("config")))
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{file}: its configuration record is invalid") from exc
    payload.pop("format_version")
    required = {"iteration", "model", "optimizer", "history"}
    if missing := required - payload.keys():
        raise BadInput(f"{file}: checkpoint lacks {', '.join(sorted(missing))}")
    return config, payload
