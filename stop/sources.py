"""The user's program files (a target, an improver, a utility), read the one way: a
regular file, at most MAX_BYTES, UTF-8 text; anything else is bad input that says so."""

from __future__ import annotations

from pathlib import Path

from stop.errors import BadInput

MAX_BYTES = 1 << 20  # a program to rewrite must fit in a model's prompt many times over


def read_source(path: Path, what: str) -> str:
    """`what`: how the message names the file ("target", "improver", "utility file")."""
    try:
        if not path.exists():
            raise BadInput(f"no such {what} file: {path}")
        if not path.is_file():  # a folder, /dev/zero, a pipe: never read to the end
            raise BadInput(f"{what} {path} is not a regular file")
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_BYTES:
        raise BadInput(f"{what} {path} is larger than {MAX_BYTES >> 20} MiB")
    if b"\0" in data:
        raise BadInput(f"{what} {path} is a binary file, not a program")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise BadInput(f"cannot read {what} {path}: it is not UTF-8 text") from exc
