"""The run store: runs/<run-id>/ with the config, an append-only event log, every
candidate or generation, the language-model exchanges, and the result. Every record is a
typed record of stop/records.py; every file is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from json import JSONDecodeError
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from stop.errors import BadInput
from stop.llm.base import Completion, Prompt
from stop.records import (
    FORMAT_VERSION,
    CandidateRecord,
    CandidateSaved,
    Delivered,
    Evaluation,
    Event,
    Exchange,
    Failed,
    Finished,
    GenerationRecord,
    GenerationSaved,
    ImproverRecord,
    Process,
    Record,
    RecordSaved,
    Resumed,
    Started,
)

log = logging.getLogger(__name__)
Watcher = Callable[[Any], None]  # called with each event as it happens
R = TypeVar("R", bound=BaseModel)
EVENT = TypeAdapter(Event)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `path` through a temporary file beside it, flushed to disk, then renamed
    into place: a crash or Ctrl-C leaves the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EventLog:
    """Each event once, to every watcher and, once the run has a directory, to its
    events.jsonl. Events before that (a utility's calibration) are kept and written when
    the directory is made; if it never is, nothing was written."""

    def __init__(self, watchers: tuple[Watcher, ...] = ()) -> None:
        self.watchers = list(watchers)
        self._path: Path | None = None
        self._pending: list[Any] = []
        self._lock = threading.Lock()

    def emit(self, event: Any) -> None:
        with self._lock:
            if self._path is None:
                self._pending.append(event)
            else:
                # The first event of a run's log (started, resumed) goes before those
                # kept while it had no directory.
                for each in (event, *self._pending):
                    _append(self._path, each)
                self._pending.clear()
        for watch in self.watchers:
            watch(event)

    def attach(self, path: Path) -> None:
        """Write into `path` from the next event on."""
        with self._lock:
            self._path = path


def _append(path: Path, record: BaseModel, exclude_none: bool = False) -> None:
    line = record.model_dump_json(exclude_none=exclude_none).encode() + b"\n"
    with open(path, "a+b") as f:
        # A run killed in the middle of a line leaves it without its newline: the next
        # record starts a line of its own, or it would be lost in the broken one.
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)  # "a": at the end, wherever the file position is


class DamagedRun(BadInput):
    """A run folder, or a file in it, that cannot be read back. `problem` names the file
    and what is wrong with it; the message adds the run, which a listing names itself."""

    def __init__(self, run_id: str, problem: str) -> None:
        super().__init__(f"run {run_id}: {problem}")
        self.run_id = run_id
        self.problem = problem


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def this_process() -> Process | None:
    """This process, as a run's log records the one running it."""
    start = _start_ticks(os.getpid())
    if start is None:
        return None
    return Process(pid=os.getpid(), start=start, host=os.uname().nodename)


def alive(process: Process) -> bool | None:
    """Whether the process that ran a run still runs it; None where this machine cannot
    tell (another host)."""
    if process.host != os.uname().nodename:
        return None
    return _start_ticks(process.pid) == process.start


def shown_name(path: Path, run_id: str) -> str:
    """A file of run `run_id` as messages name it: `config.json`, `gen_001.json in
    generations/`."""
    parts = path.parts
    inside = parts[len(parts) - parts[::-1].index(run_id) :] if run_id in parts else ()
    if len(inside) < 2:
        return path.name
    return f"{path.name} in {'/'.join(inside[:-1])}/"


def read_text(path: Path, run_id: str) -> str:
    """A text file of run `run_id`; a missing, unreadable or binary one is a DamagedRun."""
    name = shown_name(path, run_id)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DamagedRun(run_id, f"{name} is missing") from exc
    except OSError as exc:
        raise DamagedRun(run_id, f"cannot read {name} ({exc.strerror or exc})") from exc
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise DamagedRun(
            run_id, f"cannot read {name}: not UTF-8 text (byte {exc.start} of {len(data)})"
        ) from exc


def read_events(run_dir: Path) -> list[Any]:
    """A run's events; a line that is not one (being written right now) is skipped."""
    return scan_events(run_dir)[0]


def scan_events(run_dir: Path) -> tuple[list[Any], list[int]]:
    """A run's events, and the numbers of the lines that are not one. A last line
    without its newline is being written right now: skipped, not counted. A run with no
    events.jsonl has no events; one that cannot be read is a DamagedRun."""
    try:
        data = (run_dir / "events.jsonl").read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        why = exc.strerror or exc
        raise DamagedRun(run_dir.name, f"cannot read events.jsonl ({why})") from exc
    lines = data.split(b"\n")
    events, bad = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(EVENT.validate_json(line))
        except ValidationError:
            if number < len(lines):
                bad.append(number)
    return events, bad


def read_json(path: Path, run_id: str) -> dict[str, Any]:
    """A record file of run `run_id`, as JSON, in this stop's run format; else a
    DamagedRun saying what is wrong with it."""
    name = shown_name(path, run_id)
    try:
        data = json.loads(read_text(path, run_id))
    except JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}"
        raise DamagedRun(run_id, f"cannot read {name}: not JSON ({exc.msg}: {at})") from exc
    if not isinstance(data, dict):
        raise DamagedRun(run_id, f"{name} is not a record (not a JSON object)")
    version = data.get("format_version")
    if version is None:
        raise DamagedRun(run_id, f"{name} is not a record (it has no format_version)")
    if version != FORMAT_VERSION:
        raise DamagedRun(
            run_id,
            f"{name} was written in run format {version!r}, and this stop reads format "
            f"{FORMAT_VERSION}; open it with the stop version that made it",
        )
    return data


def read_record(path: Path, shape: type[R], run_id: str, what: str = "record") -> R:
    """A record file of run `run_id` as `shape` (`what` names it in errors)."""
    data = read_json(path, run_id)
    try:
        return shape.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        name = shown_name(path, run_id)
        raise DamagedRun(run_id, f"corrupt {what} {name}: {where}: {first['msg']}") from exc


def read_generations(run_dir: Path) -> list[GenerationRecord]:
    """A self-improve run's complete generations, 0, 1, ...; a gap or a damaged record
    is a DamagedRun."""
    folder = run_dir / "generations"
    records = [
        read_record(folder / name, GenerationRecord, run_dir.name, "generation record")
        for name in list_folder(folder, run_dir.name)
        if name.startswith("gen_") and name.endswith(".json")
    ]
    for i, record in enumerate(records):
        if record.gen != i:
            raise DamagedRun(
                run_dir.name, f"missing generation {i} (no gen_{i:03d}.json in generations/)"
            )
    return records


def list_folder(folder: Path, run_id: str) -> list[str]:
    """The names in a folder of run `run_id`, sorted; none if it is not there yet. Not
    Path.glob: it takes a folder it cannot read for an empty one."""
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    except OSError as exc:
        name = shown_name(folder, run_id)
        raise DamagedRun(run_id, f"cannot read {name}/ ({exc.strerror or exc})") from exc


class RunStore:
    """One run directory. Writes are atomic per file; the event log only grows."""

    suffix = ".py"  # of saved programs: an improve run saves them as its target's kind

    def __init__(self, run_dir: Path, events: EventLog | None = None) -> None:
        self.dir = run_dir
        self.id = run_dir.name
        self.events = events or EventLog()
        self.events.attach(run_dir / "events.jsonl")
        self._lock = threading.Lock()
        # Added to every logged exchange: self-improvement sets the generation a round
        # makes, so a viewer can show the exchanges behind it.
        self.gen: int | None = None

    @classmethod
    def create(
        cls, runs_dir: Path, kind: str, config: Record, events: EventLog | None = None
    ) -> RunStore:
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(3)}"
        run_dir = runs_dir / run_id
        # No sandbox sees the runs folder: it is outside every jail's view.
        (run_dir / "candidates").mkdir(parents=True)
        write_atomic(run_dir / "config.json", config.model_dump_json(indent=2) + "\n")
        store = cls(run_dir, events)
        store.emit(Started(kind=kind, process=this_process()))
        return store

    @classmethod
    def resume(cls, runs_dir: Path, run_id: str, events: EventLog | None = None) -> RunStore:
        store = cls(runs_dir / run_id, events)
        store.emit(Resumed(process=this_process()))
        return store

    def restart_improve(self) -> list[int]:
        """An improve run begins again in its folder: what the earlier attempts scored and
        saved is cleared (the replay writes it again), and the order their waits were
        answered in is returned, the longest attempt's: each attempt replays the one
        before it and goes further."""
        attempts: list[list[int]] = [[]]
        for event in read_events(self.dir):
            if isinstance(event, Resumed):
                attempts.append([])
            elif isinstance(event, Delivered):
                attempts[-1].append(event.handle)
        for folder in ("candidates", "records"):
            shutil.rmtree(self.dir / folder, ignore_errors=True)
        (self.dir / "candidates").mkdir()
        # The attempt just begun is the last one, empty so far.
        return max(attempts, key=len)

    def emit(self, event: Any) -> None:
        self.events.emit(event)

    def write_text(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, text)
        return path

    def write_record(self, name: str, record: BaseModel) -> Path:
        return self.write_text(name, record.model_dump_json(indent=2) + "\n")

    def _log(self, exchange: Exchange) -> None:
        with self._lock:
            # A failure's line has no text and a reply's no error, rather than nulls.
            _append(self.dir / "llm.jsonl", exchange, exclude_none=True)

    def exchange_logger(self, role: str | None = None) -> tuple[Callable, Callable]:
        """(on_exchange, on_failure) for a LanguageModel: its samples into llm.jsonl,
        tagged with `role` and the generation being made."""

        def asked(prompt: Prompt) -> dict[str, Any]:
            return {
                "gen": self.gen,
                "role": role,
                "system": prompt.expertise,
                "user": prompt.message,
                "temperature": prompt.temperature,
                "sample": prompt.sample,
            }

        def on_exchange(prompt: Prompt, completion: Completion) -> None:
            self._log(Exchange(**asked(prompt), **completion.model_dump()))

        def on_failure(prompt: Prompt, error: Exception) -> None:
            self._log(Exchange(**asked(prompt), error=str(error)))

        return on_exchange, on_failure

    def save_improver_record(self, name: str, data: Any) -> None:
        self.write_record(
            f"records/{name}.json", ImproverRecord(run_id=self.id, name=name, data=data)
        )
        self.emit(RecordSaved(name=name))

    def save_candidate(
        self, origin: str, program: str | None, evaluation: Evaluation
    ) -> CandidateRecord:
        with self._lock:
            index = sum(1 for _ in (self.dir / "candidates").glob("*.json"))
            path = None
            if program is not None:
                path = f"candidates/{index:03d}{self.suffix}"
                write_atomic(self.dir / path, program)
            record = CandidateRecord(index=index, origin=origin, path=path, evaluation=evaluation)
            write_atomic(
                self.dir / f"candidates/{index:03d}.json", record.model_dump_json(indent=2)
            )
        self.emit(
            CandidateSaved(
                index=index,
                status=evaluation.status,
                score=evaluation.score,
                origin=origin,
                path=path,
            )
        )
        return record

    # --- self-improve runs ----------------------------------------------------------

    def save_generation(
        self, record: GenerationRecord, source: str, proposals: dict[str, str] | None = None
    ) -> None:
        """`proposals`: the round's rejected proposals' sources (path -> source), written
        before the record so that a record never names a file that is not there."""
        for path, text in (proposals or {}).items():
            target = self.dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, text)
        self.write_text(record.path, source)
        # The record comes last: its presence is what makes the generation count as done.
        self.write_record(f"generations/gen_{record.gen:03d}.json", record)
        self.emit(
            GenerationSaved(
                gen=record.gen,
                val=record.meta_utility_val,
                test=record.meta_utility_test,
                kept=record.kept,
                seconds=record.seconds,
            )
        )


def is_dir(path: Path) -> bool:
    """Whether `path` is a folder; one that cannot be looked at is bad input (Path.is_dir
    raises on a folder above it that cannot be searched)."""
    try:
        return path.is_dir()
    except OSError as exc:
        raise BadInput(f"cannot read {path} ({exc.strerror or exc})") from exc


def read_config(runs_dir: Path, run_id: str, shape: type[R]) -> R:
    """The configuration run `run_id` was started with (for --resume), as `shape`."""
    return read_record(_run_dir(runs_dir, run_id) / "config.json", shape, run_id, "config")


def _run_dir(runs_dir: Path, run_id: str) -> Path:
    if "/" in run_id or run_id.startswith(".") or not is_dir(runs_dir / run_id):
        raise BadInput(f"no run {run_id!r} in {runs_dir}")
    return runs_dir / run_id


def run_state(events: list[Any]) -> tuple[str, str | None, Process | None]:
    """How a run stands by its log: running, finished, interrupted, failed or killed (its
    process gone without a word: kill -9, power, OOM), the error if any, and the process
    the log last named as running it."""
    status, error = "running", None
    runner = None
    for event in events:
        if isinstance(event, Finished):
            status, error = "finished", None
        elif isinstance(event, Failed):
            error = event.error
            status = "interrupted" if error.startswith("KeyboardInterrupt") else "failed"
        elif isinstance(event, Started | Resumed):
            status, error, runner = "running", None, event.process
    if status == "running" and runner is not None and alive(runner) is False:
        status, error = "killed", "the process running it ended without saying so"
    return status, error, runner


def check_resumable(runs_dir: Path, run_id: str, kind: str) -> None:
    """BadInput unless run `run_id` is a `kind` run that stopped before it finished."""
    _run_dir(runs_dir, run_id)
    events = read_events(runs_dir / run_id)
    started = next((e for e in events if isinstance(e, Started)), None)
    if started is not None and started.kind != kind:
        raise BadInput(
            f"run {run_id} is a {started.kind} run: resume it with stop {started.kind} --resume"
        )
    status, _, runner = run_state(events)
    if status == "finished":
        raise BadInput(f"run {run_id} has finished: there is nothing to resume")
    if status == "running" and runner is not None and alive(runner):
        raise BadInput(f"run {run_id} is still running (process {runner.pid})")


def resolve_generation(spec: str, runs_dir: Path) -> Path:
    """`<run-id>:<gen>` -> that generation's improver file."""
    run_id, _, gen = spec.rpartition(":")
    if not run_id or not gen.isdigit():
        raise BadInput(f"{spec!r} is not <run-id>:<generation>")
    if not is_dir(runs_dir / run_id):
        raise BadInput(f"no run {run_id!r} in {runs_dir}")
    path = runs_dir / run_id / "generations" / f"gen_{int(gen):03d}.py"
    try:
        found = path.is_file()
    except OSError as exc:
        raise DamagedRun(run_id, f"cannot read generations/ ({exc.strerror or exc})") from exc
    if not found:
        raise BadInput(f"run {run_id} has no generation {gen}")
    return path
