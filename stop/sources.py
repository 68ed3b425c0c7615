"""The user's program files (a target, an improver, a utility), read the one way: a
regular file, at most MAX_BYTES, UTF-8 text; anything else is bad input that says so.
And an improver's source, by any of the names a user gives it."""

from __future__ import annotations

import importlib.resources
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


def load_improver(spec: str, runs_dir: Path = Path("runs")) -> str:
    """Source of a built-in improver (`seed`), an improver file, or a saved generation
    (`<run-id>:<gen>`)."""
    if ":" in spec and not spec.endswith(".py"):
        from stop.store import resolve_generation

        spec = str(resolve_generation(spec, runs_dir))
    if spec.endswith(".py") or "/" in spec:
        source = read_source(Path(spec), "improver")
    else:
        resource = importlib.resources.files("seed_improvers").joinpath(f"{spec}.py")
        if not resource.is_file():
            raise BadInput(
                f"unknown improver {spec!r}: give a built-in name (seed), a .py file "
                "or <run-id>:<generation>"
            )
        source = resource.read_text()
    try:
        compile(source, spec, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BadInput(
            f"improver {spec} has a syntax error at line {exc.lineno}: {exc.msg}"
        ) from exc
    return source
