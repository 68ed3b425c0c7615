"""Parsing of the CLI's repeatable KEY=VALUE options."""

from __future__ import annotations

from stop.errors import BadInput


def key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"{flag} {item!r} is not KEY=VALUE")
        out[key.strip().replace("-", "_")] = value
    return out
