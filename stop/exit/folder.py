"""An expert-iteration run's folder, in the run format every stop run shares: config.json
(the ExitConfig), events.jsonl (started, one `iteration` per checkpoint, finished or
failed), and beside them checkpoint.pt and history.json. So `stop runs`, `stop lineage`
and `stop view` read it like any other run.

A new run gets runs/<time>-exit-<hex>/ from the run store, or the explicit directory the
user names (`stop exit train --out DIR`).
"""

from __future__ import annotations

from pathlib import Path

from stop.errors import BadInput
from stop.exit.checkpoint import CHECKPOINT_NAME
from stop.exit.config import ExitConfig
from stop.records import Started
from stop.store import (
    DamagedRun,
    RunStore,
    is_dir,
    read_events,
    read_record,
    this_process,
    write_atomic,
)

KIND = "exit"  # the run kind in Started events and in run ids


def create(config: ExitConfig, runs_dir: Path, out: Path | None = None) -> RunStore:
    """A new run folder: a fresh one in `runs_dir`, or `out` (empty or new)."""
    if out is None:
        return RunStore.create(runs_dir, KIND, config)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file, not a directory")
    if any((out / name).exists() for name in ("config.json", "events.jsonl", CHECKPOINT_NAME)):
        raise BadInput(f"{out} already holds a run: pass --resume or another --out")
    out.mkdir(parents=True, exist_ok=True)
    # What RunStore.create does, at a path of the user's choosing.
    write_atomic(out / "config.json", config.model_dump_json(indent=2) + "\n")
    store = RunStore(out)
    store.emit(Started(kind=KIND, process=this_process()))
    return store


def reopen(run_dir: Path) -> RunStore:
    """An existing run folder, to resume; nothing is logged until the loop has checked
    that its checkpoint fits (a refused resume leaves the run as it was)."""
    if not is_dir(run_dir):
        raise BadInput(f"no run directory {run_dir}")
    try:
        older = not (run_dir / "config.json").exists() and (run_dir / CHECKPOINT_NAME).exists()
    except OSError as exc:  # a folder that cannot be searched
        raise DamagedRun(run_dir.name, f"cannot read {run_dir} ({exc.strerror or exc})") from exc
    if older:
        raise BadInput(
            f"{run_dir} was made by an older stop (it has no config.json); "
            "use the stop version that made it"
        )
    started = next((e for e in read_events(run_dir) if isinstance(e, Started)), None)
    if started is not None and started.kind != KIND:
        raise BadInput(f"run {run_dir.name} was made by `stop {started.kind}`, not `stop exit`")
    read_record(run_dir / "config.json", ExitConfig, run_dir.name, "config")
    return RunStore(run_dir)
