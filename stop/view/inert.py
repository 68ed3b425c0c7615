"""Untrusted text made harmless for a terminal.

Candidates, improvers, model replies and user evaluators write the details, tracebacks,
programs and exchanges that the tables, the lineage tree, `stop show` and `stop view`
display. A terminal obeys control characters and escape sequences in what it is given
(ESC[2J clears the screen, OSC sets the window title or a link), and rich lets some of
them through, so every such string passes through `inert` on its way to the screen:
each control character, and each Unicode override that reorders what is shown, becomes
its visible escape (`\\x1b`, `\\u202e`). Newlines and tabs stay. `--json` output and
the files of a run keep the raw text.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: object) -> str:
    return _UNSAFE.sub(_visible, str(text))
