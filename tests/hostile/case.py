"""The type of a case of the hostile corpus (tests/hostile/corpus.py), and how the parts
write one."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Case:
    name: str
    kind: Literal["candidate", "improver"]
    source: str
    status: str  # evaluation status (candidate) or improver outcome status (improver)
    detail: str | None = None  # regex on the evaluation's detail / the improver's error
    # Improvers only: what must hold of the run.
    run_status: str | None = None  # "completed" or "improver_failed"; None: from status
    improved: bool = False  # False: the original is kept (best.py is the original)
    returns_initial: bool = False  # the improver handed back the initial solution as is
    utility_uses: int | None = None  # exact utility evaluations spent
    model_calls: int | None = None  # exact model completions spent
    candidate_statuses: tuple[str, ...] | None = None  # sorted statuses of the records
    replies: tuple[str, ...] = ()  # the scripted model's replies; () -> MEMO
    improver: str | None = None  # a built-in improver instead of `source` ("seed")
    budget: int = 3  # utility budget
    improver_timeout_s: float = 4.0
    checks: tuple[str, ...] = ()  # extra host-side checks, by name (see test_hostile.py)
    needs: tuple[str, ...] = ()  # world-writable directories the case needs to exist
    bug: str | None = None  # a product bug the case reveals: the test is a strict xfail
    # Candidates: the case wraps the naive original, so it may score no higher than it.
    no_faster: bool = False
    must_find: tuple[str, ...] = ()  # findings the evaluation must carry, whatever it erased


def src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def xor_hex(text: str) -> str:
    return bytes(b ^ 0x5A for b in text.encode()).hex()


def candidate(name: str, source: str, status: str, detail: str | None = None, **kw) -> Case:
    return Case(name, "candidate", src(source), status, detail, **kw)


def improver(name: str, source: str, status: str, detail: str | None = None, **kw) -> Case:
    return Case(name, "improver", src(source), status, detail, **kw)
