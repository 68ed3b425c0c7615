"""The run store: runs/<run-id>/ with the config, an append-only event log, every
candidate, the language-model exchanges, and the result. Every record is a pydantic
model that rejects unknown keys and carries a format version.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput
from stop.llm.base import Completion, Prompt
from stop.scoring.utility import Evaluation

FORMAT_VERSION = 1


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION


class CandidateRecord(Record):
    index: int
    origin: str  # "original" (the input re-scored), "model" (a reply scored by the improver)
    path: str | None  # the program file, relative to the run directory
    evaluation: Evaluation


class ImproverRecord(Record):
    """JSON an improver saved with the run through `utility.record(name, data)`, such as
    MAP-Elites's archive; stamped with the run it came from."""

    run_id: str
    name: str
    data: Any


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunStore:
    """One run directory. Writes are atomic per file; the event log only grows."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.id = run_dir.name
        self._lock = threading.Lock()
        # Added to every logged exchange: self-improvement sets {"gen": n} for the round
        # that makes generation n, so a viewer can show the exchanges behind it.
        self.tags: dict[str, Any] = {}

    @classmethod
    def create(cls, runs_dir: Path, kind: str, config: BaseModel) -> RunStore:
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"
        run_dir = runs_dir / run_id
        # No sandbox sees the runs folder: it is outside every jail's view.
        (run_dir / "candidates").mkdir(parents=True)
        store = cls(run_dir)
        store.write_record("config.json", config)
        store.event("started", kind=kind)
        return store

    def write_text(self, name: str, text: str) -> Path:
        path = self.dir / name
        _write_atomic(path, text)
        return path

    def write_record(self, name: str, record: BaseModel) -> Path:
        return self.write_text(name, record.model_dump_json(indent=2) + "\n")

    def _append(self, name: str, data: dict[str, Any]) -> None:
        with self._lock, open(self.dir / name, "a") as f:
            f.write(json.dumps({"time": time.time(), **data}) + "\n")

    def event(self, event: str, **data: Any) -> None:
        self._append("events.jsonl", {"event": event, **data})

    def _log_call(self, prompt: Prompt, outcome: dict[str, Any], tags: dict[str, Any]) -> None:
        asked = {"system": prompt.expertise, "user": prompt.message}
        asked |= {"temperature": prompt.temperature, "sample": prompt.sample}
        self._append("llm.jsonl", self.tags | tags | asked | outcome)

    def log_exchange(self, prompt: Prompt, completion: Completion, **tags: Any) -> None:
        self._log_call(prompt, completion.model_dump(), tags)

    def log_failure(self, prompt: Prompt, error: Exception, **tags: Any) -> None:
        """A model call that failed: logged beside the exchanges, with its error."""
        self._log_call(prompt, {"error": str(error)}, tags)

    def save_improver_record(self, name: str, data: Any) -> None:
        (self.dir / "records").mkdir(exist_ok=True)
        self.write_record(
            f"records/{name}.json", ImproverRecord(run_id=self.id, name=name, data=data)
        )
        self.event("record", name=name)

    suffix = ".py"  # of saved programs: an improve run saves them as its target's kind

    def save_candidate(
        self, origin: str, program: str | None, evaluation: Evaluation
    ) -> CandidateRecord:
        with self._lock:
            index = sum(1 for _ in (self.dir / "candidates").glob("*.json"))
            path = None
            if program is not None:
                path = f"candidates/{index:03d}{self.suffix}"
                _write_atomic(self.dir / path, program)
            record = CandidateRecord(index=index, origin=origin, path=path, evaluation=evaluation)
            _write_atomic(
                self.dir / f"candidates/{index:03d}.json", record.model_dump_json(indent=2)
            )
        self.event("candidate", index=index, status=evaluation.status, score=evaluation.score)
        return record


def resolve_generation(spec: str, runs_dir: Path) -> Path:
    """`<run-id>:<gen>` -> that generation's improver file."""
    run_id, _, gen = spec.rpartition(":")
    if not run_id or not gen.isdigit():
        raise BadInput(f"{spec!r} is not <run-id>:<generation>")
    if not (runs_dir / run_id).is_dir():
        raise BadInput(f"no run {run_id!r} in {runs_dir}")
    path = runs_dir / run_id / "generations" / f"gen_{int(gen):03d}.py"
    if not path.is_file():
        raise BadInput(f"run {run_id} has no generation {gen}")
    return path
