"""An evaluation cache on disk: a resumed or replayed run gets a deterministic utility's
evaluations back instead of running every program again.

Keyed by the utility's fingerprint (everything besides the program that decides an
evaluation: Utility.fingerprint) and the program's key (its digest once comments and
layout are set aside: stop/scoring/sameness.py). Only a cacheable utility's evaluations
belong here (Utility.cacheable); the caller checks that, this store checks the rest.

What is stored is the program's own outcome, never the host's (`storable`):
  ok, wrong_answer, syntax_error, no_code, rejected: what the program did or is.
  timeout: stored. The limit is in the fingerprint, and running a program to its limit
    again is the dearest thing a replay could do. A machine loaded enough to push a
    program past its limit makes a timeout the run saw; the replay sees it too.
  crash: never stored. Besides the program's own exceptions, a crash is how the host's
    failures arrive: a sandbox pool that could not start (runner.py, 0 s), a Ray worker
    lost, a sandbox killed because nobody would take its result (prefetch), the
    utility's own scorer raising. The message does not tell them apart, and a crash is
    cheap to run again: it ends early.
  provisional evaluations (timed beside a generating model) and reused ones (a copy of
  one stored already) are never stored.

A cache that cannot be opened, read or written (damaged, locked past its timeout, on a
read-only disk) is warned about once and given up for the rest of the run: every get
misses, every put is dropped. A cache problem never fails a run.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError

from stop.records import Evaluation, Status

log = logging.getLogger(__name__)

STORED: frozenset[Status] = frozenset(
    {"ok", "wrong_answer", "syntax_error", "no_code", "rejected", "timeout"}
)
# Seconds a write waits for another stop process that holds the file: evaluations finish
# in threads that should not stall for long behind a cache.
LOCK_TIMEOUT_S = 10.0


def storable(evaluation: Evaluation) -> bool:
    """Whether `evaluation` is its program's own outcome, fit to stand for the next."""
    return evaluation.status in STORED and not evaluation.provisional and not evaluation.reused


class EvaluationCache:
    """SQLite keyed by (fingerprint, program key); safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=LOCK_TIMEOUT_S, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            self._failed("cannot open", exc)
            return
        try:
            with db:  # a damaged file fails here, at its first statement
                db.execute(
                    "CREATE TABLE IF NOT EXISTS evaluations (fingerprint TEXT, program TEXT, "
                    "value TEXT, stored REAL, PRIMARY KEY (fingerprint, program))"
                )
        except sqlite3.Error as exc:
            db.close()
            self._failed("cannot use", exc)
            return
        self._db = db

    @property
    def usable(self) -> bool:
        """False once the file failed: every get misses and every put is dropped."""
        return self._db is not None

    def get(self, fingerprint: str, program_key: str) -> Evaluation | None:
        """The stored evaluation, marked reused from the cache; None on a miss."""
        with self._lock:
            if self._db is None:
                return None
            try:
                row = self._db.execute(
                    "SELECT value FROM evaluations WHERE fingerprint = ? AND program = ?",
                    (fingerprint, program_key),
                ).fetchone()
            except sqlite3.Error as exc:
                self._give_up("cannot read", exc)
                return None
        if row is None:
            return None
        try:
            stored = Evaluation.model_validate_json(row[0])
        except ValidationError:
            # Written by a stop whose records differ (its code version differed too, so
            # this is a damaged row): a miss, overwritten by the next put.
            log.info("evaluation cache: an unreadable entry in %s, ignored", self.path)
            return None
        return stored.model_copy(update={"reused": "cache"})

    def put(self, fingerprint: str, program_key: str, evaluation: Evaluation) -> bool:
        """Store `evaluation` if it is `storable`; whether it was stored."""
        if not storable(evaluation):
            return False
        value = evaluation.model_dump_json()
        with self._lock:
            if self._db is None:
                return False
            try:
                with self._db:
                    self._db.execute(
                        "INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?)",
                        (fingerprint, program_key, value, time.time()),
                    )
            except sqlite3.Error as exc:
                self._give_up("cannot write", exc)
                return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> EvaluationCache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _give_up(self, what: str, exc: sqlite3.Error) -> None:
        """Run on without the file (under the lock): a damaged file stays damaged, and one
        locked past LOCK_TIMEOUT_S would stall every evaluation thread as long again."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._failed(what, exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        log.warning("evaluation cache %s: %s it (%s); evaluating without it", self.path, what, exc)
