"""A response cache on disk: a re-run replays, a crashed run resumes without paying twice."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import asdict
from pathlib import Path

from stop.errors import BadInput
from stop.llm.base import Completion, Prompt

log = logging.getLogger(__name__)


def cache_key(backend_id: str, prompt: Prompt) -> str:
    material = json.dumps({"backend": backend_id, **asdict(prompt)}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def check_cache(path: Path) -> None:
    """Raise BadInput if `path` exists and is not a response cache stop can read; creates
    nothing. Unlike the evaluation cache, a damaged response cache is not set aside: a run
    without it would pay again for every reply it holds, and a resume depends on it."""
    if not path.exists():
        return
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            db.execute("SELECT name FROM sqlite_master").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return  # another stop process is writing it: readable, later
        raise _damaged(path, exc) from exc
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, exc) from exc


def _damaged(path: Path, exc: Exception) -> BadInput:
    return BadInput(
        f"the response cache {path} cannot be read ({exc}): move it away to start a new "
        "one (its replies will be paid for again), or run with --no-cache"
    )


class ResponseCache:
    """SQLite keyed by everything that determines a response; safe across threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # timeout: several stop processes may share one cache file
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        try:
            with self._lock, self._db:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT)"
                )
        except sqlite3.DatabaseError as exc:  # damaged (Run checks it before the run)
            self._db.close()
            raise _damaged(path, exc) from exc

    def get(self, key: str) -> Completion | None:
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT value FROM responses WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as exc:  # a locked or damaged cache is a miss, not a failed run
            log.warning("response cache: %s", exc)
            return None
        if row is None:
            return None
        return Completion.model_validate_json(row[0]).model_copy(update={"cached": True})

    def put(self, key: str, completion: Completion) -> None:
        value = completion.model_copy(update={"cached": False}).model_dump_json()
        try:
            with self._lock, self._db:
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            log.warning("response cache: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._db.close()
