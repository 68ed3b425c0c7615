"""Checkpoints: torch.save of the whole run state, written atomically, with the run's
config record inside so that an incompatible or corrupt file is rejected on load.

Loading uses `torch.load(weights_only=True)`: a checkpoint holds only tensors, numbers,
strings, lists and dicts, so loading one cannot run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from stop.errors import BadInput
from stop.exit.config import FORMAT_VERSION, ExitConfig

CHECKPOINT_NAME = "checkpoint.pt"


def atomic_write_bytes(path: Path, write) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it into place: a
    crash or Ctrl-C leaves either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(path: Path, config: ExitConfig, state: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, "config": config.model_dump_json(), **state}
    atomic_write_bytes(path, lambda handle: torch.save(payload, handle))


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
        raise BadInput(f"{file}: unsupported checkpoint format {version!r}")
    try:
        config = ExitConfig.model_validate(json.loads(payload.pop("config")))
    except (ValidationError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{file}: its configuration record is invalid") from exc
    payload.pop("format_version")
    required = {"iteration", "model", "optimizer", "history"}
    if missing := required - payload.keys():
        raise BadInput(f"{file}: checkpoint lacks {', '.join(sorted(missing))}")
    return config, payload
