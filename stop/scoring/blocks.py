"""OpenEvolve's EVOLVE-BLOCK markers: in a target that has them, only the code between
`# EVOLVE-BLOCK-START` and `# EVOLVE-BLOCK-END` may change.

A candidate is compared with the target outside its blocks, line by line, ignoring
trailing spaces and blank lines at a segment's ends (models reflow those); one that
changes anything else, or drops or adds a marker, is rejected unrun with the reason.
"""

from __future__ import annotations

from stop.errors import BadInput

START, END = "EVOLVE-BLOCK-START", "EVOLVE-BLOCK-END"

RULE = (
    f"Only the code between the lines `# {START}` and `# {END}` may change: a program "
    "that changes anything outside them (or the marker lines) is rejected and scores 0."
)


class Unbalanced(ValueError):
    pass


def _segments(source: str) -> list[list[str]]:
    """The text outside the blocks, one list of lines per segment (blocks + 1 of them)."""
    segments: list[list[str]] = [[]]
    inside = False
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip().lstrip("#").strip()
        if marker.startswith(START) or marker.startswith(END):
            opens = marker.startswith(START)
            if opens and inside:
                raise Unbalanced(f"line {number}: a block starts inside another")
            if not opens and not inside:
                raise Unbalanced(f"line {number}: a block ends that never started")
            inside = opens
            if not opens:
                segments.append([])
        elif not inside:
            segments[-1].append(line.rstrip())
    if inside:
        raise Unbalanced("a block never ends")
    return [_trim(s) for s in segments]


def _trim(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return lines[start:end]


class Blocks:
    """What a target's markers fix: the code outside its blocks."""

    def __init__(self, fixed: list[list[str]]) -> None:
        self.fixed = fixed

    @classmethod
    def of(cls, source: str, where: str) -> Blocks | None:
        """The target's blocks, or None when it has no markers; BadInput if unbalanced."""
        if START not in source and END not in source:
            return None
        try:
            return cls(_segments(source))
        except Unbalanced as exc:
            raise BadInput(f"{where}: unbalanced EVOLVE-BLOCK markers ({exc})") from exc

    def violation(self, program: str) -> str | None:
        """Why `program` may not be scored, or None."""
        try:
            segments = _segments(program)
        except Unbalanced as exc:
            return f"its EVOLVE-BLOCK markers are unbalanced ({exc})"
        if len(segments) != len(self.fixed):
            return (
                f"it has {len(segments) - 1} EVOLVE-BLOCKs where the original has "
                f"{len(self.fixed) - 1}: {RULE}"
            )
        for kept, mine in zip(self.fixed, segments, strict=True):
            if kept != mine:
                pairs = enumerate(zip(kept, mine, strict=False))
                i = next((i for i, (a, b) in pairs if a != b), min(len(kept), len(mine)))
                rest = (mine if i < len(mine) else kept)[i:]
                line = next(line.strip() for line in rest if line.strip())
                return f"it changes code outside the EVOLVE-BLOCKs, at {line!r}"
        return None
