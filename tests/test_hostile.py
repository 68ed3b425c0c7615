"""The hostile corpus (tests/hostile/corpus.py), each case through the product's real path.

Candidates are scored by the speed utility built from examples/fib.py (its own workload,
`evaluate()`); improvers run in `stop.improve.improve` with the scripted model. Each case
asserts its own outcome, then the invariants every case shares:

- the host survives and the run completes (the result is saved);
- no process of a sandbox's jail (its PID namespace) is left, no temporary directory;
  as root also no process of a sandbox user id this case used, no file of that user in
  a world-writable place, no System V IPC object of that user;
- no file outside the sandbox changed: canaries in /tmp and in the test's private
  directory, the target, the package, and paths under /, /etc, /root the cases try;
- nobody connected to the host's loopback listener;
- the secrets in the host's environment appear in no result, no stdout or stderr tail,
  and no file of the run directory.

The user ids, temporary directories and sandbox results are observed through thin spies
(on `stop.sandbox.reaper` and the callers of run_job) that call the real functions: other
test sessions may run sandboxes at the same time, and only this case's own may be judged.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import stop
import stop.host.improver
import utilities.speed
from stop.records import Budget, ImproveConfig, ImproveResult, ModelSettings
from stop.sandbox import executor, reaper, slots
from stop.sandbox.runner import SandboxResult
from stop.scoring.utility import Evaluation, Target, UtilityOptions
from tests import jailcheck
from tests.helpers import FIB, improve_run
from tests.hostile.corpus import CANDIDATES, IMPROVERS, MEMO_REPLY, PROBES, Case, render

ROOT = os.geteuid() == 0

TIMEOUT_S = 2.0  # per candidate evaluation: the time limit every hang runs into
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
PACKAGE = Path(stop.__file__).resolve().parent


# --- processes, files and IPC objects of a user id --------------------------------


def _shared_dirs() -> list[str]:
    """World-writable directories: the usual ones and those one level inside /tmp."""
    found = [d for d in WORLD_WRITABLE if os.path.isdir(d)]
    try:
        for entry in os.scandir("/tmp"):
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode) and mode & stat.S_IWOTH:
                found.append(entry.path)
    except OSError:
        pass
    return found


def leftover_files(uids: set[int]) -> list[str]:
    found = []
    for folder in _shared_dirs():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid in uids:
                    found.append(entry.path)
            except OSError:
                continue
    return found


def ipc_objects(uids: set[int]) -> list[tuple[str, int]]:
    """System V IPC objects (shm, msg, sem) owned or created by one of `uids`."""
    found = []
    for kind in ("shm", "msg", "sem"):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        header = lines[0].split()
        for line in lines[1:]:
            row = dict(zip(header, line.split(), strict=False))
            if {int(row["uid"]), int(row["cuid"])} & uids:
                found.append((kind, int(row[{"shm": "shmid", "msg": "msqid"}.get(kind, "semid")])))
    return found


def _remove_ipc(objects: list[tuple[str, int]]) -> None:
    flags = {"shm": "-m", "msg": "-q", "sem": "-s"}
    for kind, ident in objects:
        subprocess.run(["ipcrm", flags[kind], str(ident)], capture_output=True, check=False)


def _fingerprint(path: Path) -> tuple:
    st = os.lstat(path)
    return (st.st_ino, st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, path.read_bytes())


# --- the world a case runs in ------------------------------------------------------


@dataclass
class World:
    tmp: Path
    secrets: list[str]
    values: dict[str, str]
    runs_dir: Path
    listener: socket.socket
    watched: dict[Path, tuple] = field(default_factory=dict)
    tmp_entries: set[str] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)
    host_dirs: list[str] = field(default_factory=list)
    results: list[SandboxResult] = field(default_factory=list)

    def freeze(self) -> None:
        """Fingerprint everything outside the sandbox that must not change."""
        for path in [Path(self.values[k]) for k in ("TMP_CANARY", "SECRET_FILE", "HOST_CANARY")]:
            self.watched[path] = _fingerprint(path)
        self.watched[FIB] = _fingerprint(FIB)
        self.tmp_entries = set(os.listdir(self.tmp))

    def check(self, produced: list[str]) -> None:
        """The invariants every case shares; `produced` is what the product returned."""
        slots.shutdown()  # spare sandboxes made during the case hold folders of their own
        assert self.results, "no sandbox ran: the case did not go through the sandbox"
        jails = {jailcheck.pid_namespace(r) for r in self.results if r.isolation}
        left = jailcheck.survivors(jails)
        assert not left, f"processes of the sandboxes' jails survived: {left}"
        assert not [d for d in self.host_dirs if os.path.exists(d)], self.host_dirs
        if ROOT:
            uids = self.uids
            assert uids and all(200_000 <= u < 300_000 for u in uids), uids
            left = jailcheck.uid_survivors(uids)
            assert not left, f"processes of the sandbox users survived: {left}"
            assert not leftover_files(uids), leftover_files(uids)
            assert not ipc_objects(uids), (
                f"System V IPC objects outlived the sandbox: {ipc_objects(uids)}"
            )
        for path, before in self.watched.items():
            assert _fingerprint(path) == before, f"{path} changed"
        assert set(os.listdir(self.tmp)) == self.tmp_entries, "the host's directory changed"
        for probe in [*PROBES, str(PACKAGE / "pwned.py"), str(PACKAGE / "sandbox" / "pwned.py")]:
            assert not os.path.lexists(probe), f"{probe} was created"
        with pytest.raises(BlockingIOError):
            self.listener.accept()  # nobody connected
        texts = list(produced)
        for result in self.results:
            texts += [result.stdout, result.stderr, json.dumps(result.value), str(result.error)]
        if self.runs_dir.exists():
            for path in self.runs_dir.rglob("*"):
                if path.is_file():
                    texts.append(path.read_bytes().decode("utf-8", "replace"))
        for secret in self.secrets:
            where = [i for i, text in enumerate(texts) if secret in text]
            assert not where, f"a secret left the host ({secret[:9]}...) in texts {where}"

    def clean(self) -> None:
        """Whatever a failed case left behind goes, so that it cannot fail the next one."""
        for pid in jailcheck.processes_of(self.uids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in leftover_files(self.uids):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
        _remove_ipc(ipc_objects(self.uids))
        for probe in [*PROBES, str(PACKAGE / "pwned.py"), str(PACKAGE / "sandbox" / "pwned.py")]:
            if os.path.lexists(probe):
                os.unlink(probe)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    for probe in PROBES:
        assert not os.path.lexists(probe), f"{probe} exists before the case ran"
    secret_values = [f"sk-canary-{secrets.token_hex(16)}", f"tok-canary-{secrets.token_hex(16)}"]
    monkeypatch.setenv("OPENAI_API_KEY", secret_values[0])
    monkeypatch.setenv("MY_SERVICE_TOKEN", secret_values[1])

    tag = secrets.token_hex(6)
    tmp_canary = Path(f"/tmp/stop-hostile-canary-{tag}")
    tmp_canary.write_text("a root-owned canary anyone may read\n")
    tmp_canary.chmod(0o644)
    secret_file = Path(f"/tmp/stop-hostile-secret-{tag}")
    secret_file.write_text(secret_values[0] + "\n")
    secret_file.chmod(0o600)
    shared = Path(f"/tmp/stop-hostile-shared-{tag}")
    shared.mkdir()
    shared.chmod(0o1777)
    # A project's runs/ is usually readable by others; so is this one.
    runs_dir = Path(f"/tmp/stop-hostile-runs-{tag}")
    runs_dir.mkdir()
    runs_dir.chmod(0o755)
    host_canary = tmp_path / "canary.txt"
    host_canary.write_text("the host's own file\n")
    host_canary.chmod(0o644)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)

    w = World(
        tmp=tmp_path,
        secrets=secret_values,
        values={
            "TMP_CANARY": str(tmp_canary),
            "SECRET_FILE": str(secret_file),
            "HOST_CANARY": str(host_canary),
            "HOST_DIR": str(tmp_path),
            "SHARED_DIR": str(shared),
            "PORT": str(listener.getsockname()[1]),
            "RUNS_DIR": str(runs_dir),
            "TAG": tag,
        },
        runs_dir=runs_dir,
        listener=listener,
    )

    # Spies: each calls the real function and notes what this case's sandboxes used.
    next_uid, mkdtemp = reaper.next_uid, tempfile.mkdtemp

    def spy_uid(weak: bool) -> int:
        uid = next_uid(weak)
        w.uids.add(uid)
        return uid

    def spy_mkdtemp(*args, **kwargs):
        path = mkdtemp(*args, **kwargs)
        if os.path.basename(path).startswith(("stop-sbx-", "stop-host-")):
            w.host_dirs.append(path)
        return path

    # "*_unguarded" cases test the walls beneath the audit-hook guard: the guard is left
    # out of their sandboxes (run_job(guard=False)), as the sandbox tests do.
    guarded = "unguarded" not in request.node.name

    def spy_run_job(real):
        def run_job(*args, **kwargs) -> SandboxResult:
            kwargs.setdefault("guard", guarded)
            result = real(*args, **kwargs)
            slots.settle()  # its sweep runs just after it: the checks look after that
            w.results.append(result)
            return result

        return run_job

    monkeypatch.setattr(reaper, "next_uid", spy_uid)
    monkeypatch.setattr(tempfile, "mkdtemp", spy_mkdtemp)
    monkeypatch.setattr(executor, "run_job", spy_run_job(executor.run_job))
    slots.discard_spares()  # spares made before the spies would hide their uids and folders
    monkeypatch.setattr(stop.host.improver, "run_job", spy_run_job(stop.host.improver.run_job))
    try:
        yield w
    finally:
        w.clean()
        listener.close()
        for path in (tmp_canary, secret_file):
            path.unlink(missing_ok=True)
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(runs_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fib_utility():
    """The speed utility on examples/fib.py and its own workload, built once."""
    target = Target(path=FIB, source=FIB.read_text())
    utility = utilities.speed.build(target, UtilityOptions(timeout_s=TIMEOUT_S))
    utility.calibrate(target)
    return utility


def _params(cases: list[Case]) -> list:
    params = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=f"BUG: {case.bug}")] if case.bug else []
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def _skip_unless_present(case: Case) -> None:
    for folder in case.needs:
        st = os.stat(folder) if os.path.isdir(folder) else None
        if st is None or not st.st_mode & stat.S_IWOTH:
            pytest.skip(f"{folder} is not a world-writable directory here")


def test_corpus_is_complete():
    names = [(c.kind, c.name) for c in CANDIDATES + IMPROVERS]
    assert len(names) == len(set(names))
    assert len(names) >= 25
    for case in CANDIDATES + IMPROVERS:
        allowed = (
            ("ok", "wrong_answer", "timeout", "crash", "syntax_error")
            if case.kind == "candidate"
            else ("ok", "timeout", "crash", "syntax_error")
        )
        assert case.status in allowed, case.name
        if case.status != "ok":
            assert case.detail, f"{case.name}: a failure must say which"


# --- candidates --------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(CANDIDATES))
def test_candidate(case: Case, world: World, fib_utility):
    _skip_unless_present(case)
    program = render(case.source, world.values)
    assert not re.search(r"@[A-Z_]+@", program), "a placeholder was left unrendered"
    world.freeze()

    evaluation = fib_utility.evaluate(program)

    assert isinstance(evaluation, Evaluation)
    assert evaluation.status == case.status, evaluation
    if case.detail is not None:
        assert re.search(case.detail, evaluation.detail or ""), evaluation.detail
    if case.status == "ok":
        assert evaluation.score > 0 and evaluation.detail is None
    else:
        assert evaluation.score == 0.0
    if case.no_faster:  # it wraps the original, which scores about 1 against itself
        assert evaluation.score < 1.5, evaluation
    assert set(case.must_find) <= set(evaluation.findings), evaluation.findings
    if case.status == "timeout":
        assert evaluation.seconds < TIMEOUT_S + 15  # killed, not waited for
    world.check([evaluation.model_dump_json()])


def test_the_utility_still_scores_the_original_after_the_corpus(fib_utility):
    """Runs after every candidate above, on the same utility: the run goes on."""
    evaluation = fib_utility.evaluate(FIB.read_text())
    assert evaluation.status == "ok" and evaluation.score > 0, evaluation


# --- improvers ---------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(IMPROVERS))
def test_improver(case: Case, world: World):
    _skip_unless_present(case)
    script = world.tmp / "script.json"
    script.write_text(json.dumps(list(case.replies or (MEMO_REPLY,))))
    if case.improver is None:
        improver = world.tmp / "improver.py"
        improver.write_text(render(case.source, world.values))
    world.freeze()
    config = ImproveConfig(
        target=FIB,
        model=ModelSettings(backend="scripted", script=script),
        runs_dir=world.runs_dir,
        utility_options=UtilityOptions(timeout_s=TIMEOUT_S),
        improver=case.improver or str(world.tmp / "improver.py"),
        budget=Budget(
            model_calls=4,
            max_responses_per_call=4,
            max_tokens=256,
            evaluations=case.budget,
            timeout_s=case.improver_timeout_s,
        ),
    )

    result = improve_run(config)

    outcome = result.improver
    assert outcome.status == case.status, outcome
    if case.detail is not None:
        assert re.search(case.detail, outcome.error or ""), outcome.error
    run_status = case.run_status or ("completed" if case.status == "ok" else "improver_failed")
    assert result.status == run_status
    assert result.improved is case.improved, result.candidates
    best = Path(result.best_path).read_text()
    if case.improved:
        assert result.best_score > result.baseline_score and best != FIB.read_text()
    else:
        assert best == FIB.read_text(), "the original must be kept"
    if case.returns_initial:
        assert outcome.program == FIB.read_text(), outcome.program
    # Budgets hold whatever the improver did, and no one is charged twice.
    assert result.utility_uses <= case.budget
    assert len([c for c in result.candidates if c.path is not None]) == result.utility_uses
    assert result.usage.calls <= config.budget.model_calls
    if case.utility_uses is not None:
        assert result.utility_uses == case.utility_uses
    if case.model_calls is not None:
        assert result.usage.calls == case.model_calls
    if case.candidate_statuses is not None:
        statuses = sorted(c.evaluation.status for c in result.candidates)
        assert tuple(statuses) == case.candidate_statuses, result.candidates
    if "isolation_genuine" in case.checks:
        assert "forged" not in outcome.isolation, outcome.isolation
    # The run completed and reads back.
    run = Path(result.run_dir)
    assert ImproveResult.model_validate_json((run / "result.json").read_text()) == result
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[-1] == "finished"
    world.check([result.model_dump_json()])
