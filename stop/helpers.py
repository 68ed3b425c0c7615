"""Helpers that improvers may import (`from stop.helpers import extract_code`), as in STOP."""

from __future__ import annotations

import re

# A fence is three backticks and an optional language tag alone on a line (indented in a
# markdown list, perhaps).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[ \t]*$", re.MULTILINE)


def _blocks(text: str) -> list[str]:
    text = text.replace("\r\n", "\n")  # some servers answer with CRLF line ends
    blocks: list[str] = []
    fences = list(_FENCE.finditer(text))
    i = 0
    while i < len(fences):
        start = fences[i]
        end = fences[i + 1] if i + 1 < len(fences) else None
        # A closing fence carries no tag; an unterminated block (the model ran out of
        # tokens) still counts, up to the end of the text.
        body = text[start.end() : end.start() if end else len(text)]
        blocks.append(body.strip("\n"))
        i += 2
    return [b for b in blocks if b.strip()]


def extract_code(responses: str | list[str]) -> str | None | list[str]:
    """Return the largest fenced code block of a response (None if it has none).

    Given a list of responses, return the list of their largest blocks, leaving out the
    responses that contain no code, which is how STOP's seed improver uses it.
    """
    if isinstance(responses, list):
        found = [extract_code(r) for r in responses]
        return [c for c in found if c is not None]
    blocks = _blocks(responses)
    return max(blocks, key=len) if blocks else None
