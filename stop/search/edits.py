"""Diff edits: a model may answer with search/replace blocks or a unified diff instead of
the whole program, so that a large program costs a few lines of tokens to change.

Edits are applied on the host, to the program the improver named, tolerantly: an exact
match first, then one that ignores trailing whitespace, then one that ignores
indentation (the replacement is re-indented to where the match was). A block that
matches nowhere, or in more than one place, fails with a clear message; then the reply's
full program, if it holds one, is used instead (a fallback rewrite).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stop.errors import StopError
from stop.helpers import _blocks

_SEARCH_REPLACE = re.compile(
    r"^[ \t]*<{5,9}[ \t]*SEARCH[^\n]*\n(.*?)^[ \t]*={5,9}[ \t]*\n(.*?)^[ \t]*>{5,9}[ \t]*REPLACE",
    re.MULTILINE | re.DOTALL,
)
_HUNK = re.compile(r"^@@ [^\n]*@@", re.MULTILINE)


class EditError(StopError):
    """An edit that cannot be applied to the program."""


class Edit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    search: str
    replace: str


class EditOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program: str | None  # the edited program, the fallback rewrite, or None
    mode: Literal["edits", "rewrite", "none"]  # edits applied, whole program, nothing usable
    edits: int = 0  # edit blocks found in the reply
    error: str | None = None  # why the edits did not apply


def parse_edits(reply: str) -> list[Edit]:
    """Search/replace blocks, else the hunks of a unified diff, in order."""
    reply = reply.replace("\r\n", "\n")
    blocks = [Edit(search=m[1], replace=m[2]) for m in _SEARCH_REPLACE.finditer(reply)]
    return blocks or _diff_hunks(reply)


def _diff_hunks(reply: str) -> list[Edit]:
    edits = []
    for start in _HUNK.finditer(reply):
        old, new = [], []
        for line in reply[start.end() :].split("\n")[1:]:
            if line.startswith("@@") or line.startswith("```"):
                break
            if line.startswith("\\"):  # "\ No newline at end of file"
                continue
            tag, body = (line[:1], line[1:]) if line else (" ", "")
            if tag not in " -+":
                break  # prose after the diff
            if tag in " -":
                old.append(body)
            if tag in " +":
                new.append(body)
        while old and new and not old[-1].strip() and not new[-1].strip():
            old.pop()  # trailing blank context lines are often the reply's own padding
            new.pop()
        edits.append(Edit(search="\n".join(old) + "\n", replace="\n".join(new) + "\n"))
    return edits


def apply_edit(program: str, edit: Edit) -> str:
    """Replace the whole lines that SEARCH matches, exactly, else ignoring trailing
    whitespace, else ignoring indentation."""
    if not edit.search.strip():
        raise EditError("an edit block has an empty SEARCH part")
    lines = program.split("\n")
    search = edit.search.rstrip("\n").split("\n")
    replace = edit.replace.rstrip("\n").split("\n") if edit.replace.strip() else []
    for normalize in (_same, str.rstrip, str.strip):
        found = _windows(lines, search, normalize)
        if len(found) > 1:
            raise EditError(
                f"SEARCH text matches {len(found)} places: {_first_line(edit.search)!r}"
            )
        if found:
            at = found[0]
            new = _reindent(replace, search, lines[at : at + len(search)])
            return "\n".join(lines[:at] + new + lines[at + len(search) :])
    raise EditError(f"SEARCH text is not in the program: {_first_line(edit.search)!r}")


def _same(line: str) -> str:
    return line


def _windows(lines: list[str], search: list[str], normalize) -> list[int]:
    want = [normalize(s) for s in search]
    have = [normalize(s) for s in lines]
    n = len(want)
    return [i for i in range(len(have) - n + 1) if have[i : i + n] == want]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindent(replace: list[str], search: list[str], matched: list[str]) -> list[str]:
    """Shift the replacement by the indentation the match differs from the SEARCH by."""
    pairs = [(s, m) for s, m in zip(search, matched, strict=True) if s.strip()]
    if not pairs:
        return replace
    theirs, ours = _indent(pairs[0][0]), _indent(pairs[0][1])
    if theirs == ours:
        return replace
    shifted = []
    for line in replace:
        if line.startswith(theirs):
            shifted.append(ours + line[len(theirs) :])
        else:
            shifted.append(line)
    return shifted


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.split("\n") if line.strip()), "")[:80]


def _full_program(reply: str) -> str | None:
    """The largest code block that is a program, not an edit or a diff."""
    programs = [
        b for b in _blocks(reply) if not _SEARCH_REPLACE.search(b + "\n") and not _HUNK.search(b)
    ]
    return max(programs, key=len) if programs else None


def apply_reply(program: str, reply: str) -> EditOutcome:
    """The program a reply asks for: its edits applied to `program`, else (or when they
    do not apply) the full program it holds."""
    edits = parse_edits(reply)
    error = None
    if edits:
        try:
            edited = program
            for edit in edits:
                edited = apply_edit(edited, edit)
            return EditOutcome(program=edited, mode="edits", edits=len(edits))
        except EditError as exc:
            error = str(exc)
    rewrite = _full_program(reply)
    if rewrite is not None:
        return EditOutcome(program=rewrite, mode="rewrite", edits=len(edits), error=error)
    return EditOutcome(
        program=None, mode="none", edits=len(edits), error=error or "the reply holds no code"
    )
