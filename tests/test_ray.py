"""`--executor ray`: evaluations on a real Ray cluster, started on this machine for the
module, give what the local executor gives; an unreachable cluster is bad input; a worker
killed mid-task is retried or scored as a crash, exactly once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from stop.errors import BadInput
from stop.helpers import extract_code
from stop.sandbox.executor import LocalExecutor
from stop.sandbox.ray_executor import RayExecutor
from stop.sandbox.runner import Limits
from stop.scoring.task import Instance, TaskSpec, TaskUtility, load_task
from tests import improvers as I
from tests import replies
from tests.helpers import FIB, run_stop

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])


def _pids(sid: int, cmdline_prefix: bytes = b"") -> list[int]:
    """Live processes of session `sid` (whose command line starts with the prefix)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _session(int(entry)) == sid:
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline and cmdline.startswith(cmdline_prefix):  # zombies have none
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def cluster():
    """A one-node cluster (2 CPUs) in a session of its own, so that it can be stopped
    exactly: `ray stop --force` would kill every Ray process on the machine, other
    people's clusters included."""
    port = _free_port()
    # Ray 2.60 swaps a loopback --node-ip-address for this machine's own address and its
    # head listens on every interface; the cluster still never leaves this machine.
    # Short: Ray's socket paths live under it, and a Unix socket path has 107 bytes.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    start = subprocess.Popen(
        [
            str(RAY),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--object-store-memory=100000000",
            f"--temp-dir={temp}",
        ],
        cwd=temp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    sid = start.pid
    try:
        output, _ = start.communicate(timeout=120)
        assert start.returncode == 0, output
        yield {"address": f"127.0.0.1:{port}", "sid": sid}
    finally:
        if start.poll() is None:
            start.kill()
        for _ in range(100):
            alive = _pids(sid)
            if not alive:
                break
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_executor(cluster):
    ex = RayExecutor(cluster["address"])
    yield ex
    ex.close()


def _same(a, b):
    """Two evaluations agree on everything but how long they took."""
    return a.model_dump(exclude={"seconds"}) == b.model_dump(exclude={"seconds"})


def test_evaluations_on_the_cluster_equal_local_ones(ray_executor):
    spec = load_task("lpn")
    remote, local = ray_executor, LocalExecutor()
    before = ray_executor.evaluations
    programs = {
        "right": extract_code(I.GOOD_LPN),
        "wrong": extract_code(I.ZEROS_LPN),
        "crash": "def algorithm(train_samples, train_parity, test_samples):\n    1 / 0\n",
    }
    for name, program in programs.items():
        here = TaskUtility(spec, 1, local).evaluate(program)
        there = TaskUtility(spec, 1, remote).evaluate(program)
        assert _same(here, there), name
    assert here.status == "crash"  # the last: every instance raised
    # A whole job past its wall clock: killed on the worker, as it is here.
    hang = {
        "code": "def f(x):\n    while True:\n        pass\n",
        "entry": "f",
        "inputs": [[1]],
        "per_call_s": 30.0,
    }
    limits = Limits(wall_s=2.0)
    here = local.run("solve", hang, limits, ())
    there = remote.run("solve", hang, limits, ())
    assert here.status == there.status == "timeout"
    assert here.error == there.error
    # The worker's sandbox has the same walls as ours (the cluster runs as our user).
    strip = lambda isolation: [i.split("=")[0] for i in isolation if not i.startswith("uid=")]  # noqa: E731
    assert strip(there.isolation) == strip(here.isolation)
    assert ray_executor.evaluations - before == len(programs) + 1  # all came from Ray


def _nap_task() -> TaskSpec:
    """A one-instance task whose solution naps: time to kill its worker mid-task."""
    return TaskSpec(
        name="nap",
        entry="f",
        seed_solution="",
        description="nap",
        per_call_s=30.0,
        val_size=1,
        test_size=1,
        make_instance=lambda rng: Instance(args=[7], answer=7),
        score=lambda instance, output: float(output == instance.answer),
        preload=(),
    )


NAP = "import time\n\n\ndef f(x):\n    time.sleep({seconds})\n    return x\n"


def _kill_worker_mid_task(cluster, fn):
    """Run fn() in a thread; once a worker runs our task, SIGKILL that worker."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    deadline = time.monotonic() + 60
    while not (busy := _pids(cluster["sid"], b"ray::_run_job_remote")):
        assert time.monotonic() < deadline, "the task never started on a worker"
        time.sleep(0.02)
    time.sleep(0.5)  # inside the sandbox by now, napping
    for pid in busy:
        os.kill(pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    return out


def test_a_worker_killed_mid_task_is_retried_and_counted_once(cluster, ray_executor):
    before = (ray_executor.evaluations, ray_executor.lost)
    utility = TaskUtility(_nap_task(), 1, ray_executor)
    out = _kill_worker_mid_task(cluster, lambda: utility.use(NAP.format(seconds=2)))
    (evaluation,) = out
    assert evaluation.status == "ok" and evaluation.score == 1.0  # the retry finished
    assert utility.uses == 1  # charged once
    assert (ray_executor.evaluations, ray_executor.lost) == (before[0] + 1, before[1])


def test_a_worker_killed_on_every_try_is_scored_as_a_crash_once(cluster, ray_executor):
    no_retry = RayExecutor(cluster["address"], retries=0)  # shares the open connection
    utility = TaskUtility(_nap_task(), 1, no_retry)
    out = _kill_worker_mid_task(cluster, lambda: utility.use(NAP.format(seconds=2)))
    (evaluation,) = out
    assert evaluation.status == "crash" and evaluation.score == 0.0
    assert "Ray worker died" in evaluation.detail
    assert utility.uses == 1
    assert (no_retry.evaluations, no_retry.lost) == (0, 1)


def test_a_task_that_never_comes_back_is_cancelled_and_scored_as_a_crash(cluster, ray_executor):
    import ray

    # Both CPUs busy: our task waits in the queue past its (shortened) deadline.
    blockers = [ray.remote(lambda: time.sleep(60)).options(num_cpus=1).remote() for _ in "ab"]
    try:
        impatient = RayExecutor(cluster["address"], retries=0, queue_slack_s=0.0, start_slack_s=0.0)
        started = time.monotonic()
        result = impatient.run("solve", {}, Limits(wall_s=1.0), ())
        assert result.status == "crash" and "gave no result within 1 s" in result.error
        assert time.monotonic() - started < 30
        assert impatient.lost == 1
    finally:
        for ref in blockers:
            ray.cancel(ref, force=True)


def test_without_ray_installed_the_message_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(BadInput, match=r"Ray is not installed: pip install 'stop\[ray\]'"):
        RayExecutor("127.0.0.1:6379")


# Scripted replies: a proposal that asks for brute force, which the model then answers
# with the solving program; every other lpn prompt gets the useless one. Deterministic
# however the tests interleave, so both executors must reach the same lineage.
CLEVER = I.STRONGER.replace(
    "Improve the following solution:",
    "Hint: brute force over every mask. Improve the following solution:",
)
SCRIPT = [
    {"when": "def meta_utility", "replies": [CLEVER, I.LAZY]},
    {"when": "Hint: brute force", "replies": [I.GOOD_LPN]},
    {"when": "Learning parity with noise", "replies": [I.ZEROS_LPN]},
]


def _self_improve(tmp_path: Path, runs: str, *extra: str, verbose: bool = False):
    return run_stop(
        *(["-v"] if verbose else []),
        "self-improve",
        "--rounds",
        "2",
        "--tests",
        "2",
        "--script",
        str(tmp_path / "script.json"),
        "--runs-dir",
        str(tmp_path / runs),
        "--json",
        *extra,
        cwd=tmp_path,
    )


def _lineage(out: dict) -> list[dict]:
    generations = []
    for g in out["generations"]:
        path = Path(out["run_dir"]) / g["path"]
        record = json.loads(path.with_suffix(".json").read_text())
        record.pop("seconds")
        record["source"] = path.read_text()
        generations.append(record)
    return generations


def test_self_improve_through_the_cluster_gives_the_local_lineage(tmp_path, cluster):
    (tmp_path / "script.json").write_text(json.dumps(SCRIPT))
    local = _self_improve(tmp_path, "local")
    assert local.returncode == 0, local.stderr
    remote = _self_improve(
        tmp_path, "ray", "--executor", "ray", "--ray-address", cluster["address"], verbose=True
    )
    assert remote.returncode == 0, remote.stderr
    expected, got = _lineage(json.loads(local.stdout)), _lineage(json.loads(remote.stdout))
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):  # name what differs, if anything
        differ = {k: (mine.get(k), theirs.get(k)) for k in mine.keys() | theirs.keys()}
        assert not {k: v for k, v in differ.items() if v[0] != v[1]}, mine["gen"]
    # A lineage worth comparing: a better improver was found and kept, then one reverted.
    assert [g["kept"] for g in got] == [True, True, False]
    assert got[1]["meta_utility_val"] == 1.0 > got[0]["meta_utility_val"]
    # The evaluations did run on the cluster: the executor counts what came back.
    evaluations, lost = _counted(remote.stderr)
    assert evaluations > 0 and lost == 0


def _counted(stderr: str) -> tuple[int, int]:
    """(evaluations that came back from the cluster, lost ones), from the -v log."""
    log = " ".join(stderr.split())  # as the terminal wrapped it
    counted = re.search(r"ray: (\d+) evaluations ran on the cluster at \S+, (\d+) lost", log)
    assert counted, stderr
    return int(counted[1]), int(counted[2])


def test_improve_through_the_cluster_keeps_the_memoized_rewrite(tmp_path, script, cluster):
    replied = script([replies.MEMO, replies.WRONG])
    proc = run_stop(
        "-v",
        "improve",
        "--target",
        str(FIB),
        "--script",
        str(replied),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json",
        "--executor",
        "ray",
        "--ray-address",
        cluster["address"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["improved"] and "lru_cache" in Path(result["best_path"]).read_text()
    evaluations, lost = _counted(proc.stderr)
    assert evaluations > 0 and lost == 0


def test_unreachable_cluster_is_bad_input_and_writes_nothing(tmp_path):
    (tmp_path / "script.json").write_text(json.dumps(SCRIPT))
    closed = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    proc = _self_improve(tmp_path, "runs", "--executor", "ray", "--ray-address", closed)
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - started < 30
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot reach the Ray cluster at {closed}" in lines[0], lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--executor", "ray"], {}, "--executor ray needs the cluster's address"),
        (["--ray-address", "127.0.0.1:6379"], {}, "--ray-address needs --executor ray"),
        (["--executor", "dask"], {}, "'dask' is not one of"),
        (["--executor", "ray"], {"RAY_ADDRESS": "127.0.0.1:1"}, "cannot reach the Ray cluster"),
    ],
)
@pytest.mark.parametrize("command", ["improve", "self-improve"])
def test_executor_flags_bad_input(tmp_path, script, command, args, env, message):
    common = ["--script", str(script([I.LAZY])), "--runs-dir", str(tmp_path / "runs")]
    if command == "improve":
        common += ["--target", str(FIB)]
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | env
    proc = subprocess.run(
        [sys.executable, "-m", "stop.cli", command, *common, *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
