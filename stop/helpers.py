"""Helpers that improvers may import (`from stop.helpers import extract_code`), as in STOP."""

from __future__ import annotations

import ast
import re
from typing import overload

# A fence is three backticks and an optional language tag alone on a line (indented in a
# markdown list, perhaps).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[ \t]*$", re.MULTILINE)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _blocks(text: str) -> list[str]:
    text = text.replace("\r\n", "\n")  # some servers answer with CRLF line ends
    fences = list(_FENCE.finditer(text))
    blocks: list[str] = []
    i = 0
    while i < len(fences):
        start = fences[i]
        ends = [j for j in range(i + 1, len(fences)) if not fences[j].group(1)]
        bodies = {j: text[start.end() : fences[j].start()].strip("\n") for j in ends}
        # A program may hold fences itself (an improver's prompt does): take the farthest
        # closing fence that leaves valid Python, else the nearest one. An unterminated
        # block (the model ran out of tokens) runs to the end of the text.
        end = next((j for j in reversed(ends) if _parses(bodies[j])), ends[0] if ends else None)
        blocks.append(bodies[end] if end is not None else text[start.end() :].strip("\n"))
        if end is None:
            break
        i = end + 1
    return [b for b in blocks if b.strip()]


@overload
def extract_code(responses: str) -> str | None: ...
@overload
def extract_code(responses: list[str]) -> list[str]: ...
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


# For improvers that ask for edits (`language_model.batch_edit`): put this in the prompt.
EDIT_INSTRUCTIONS = """Answer with edits rather than the whole program: one or more blocks of
<<<<<<< SEARCH
lines copied exactly from the program
=======
the lines to put in their place
>>>>>>> REPLACE
Each SEARCH part must match the program in exactly one place. A unified diff (```diff with
@@ hunks) also works. If the change is large, answer with the complete program instead."""
