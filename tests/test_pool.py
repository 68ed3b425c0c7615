"""The warm sandbox pool (stop/sandbox/pool.py, zygote.py): a child forked from the warm
parent is confined exactly as a fresh interpreter is, and failures of the pool are
scored as failed evaluations, never lost or hung.

The rest of the sandbox's tests (test_sandbox.py, test_hostile.py) run through the pool
too, since it is the default; here the two paths are compared side by side.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from stop.sandbox import jail, pool, slots
from stop.sandbox.runner import Limits, run_job
from tests import jailcheck

ROOT = os.geteuid() == 0
FAST = Limits(wall_s=5)

PROBE = """
import os, resource
def f():
    try:
        import socket
        socket.create_connection(("127.0.0.1", 22), timeout=0.5)
        net = "open"
    except Exception as exc:
        net = type(exc).__name__
    return {
        "uid": os.getuid() != 0,
        "env": sorted(os.environ),
        "cwd_empty": os.listdir(".") == [],
        "cwd": os.getcwd(),
        "net": net,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "as": resource.getrlimit(resource.RLIMIT_AS)[0],
        "session_leader": os.getsid(0) == os.getppid(),
        "secret_visible": "OPENAI_API_KEY" in os.environ,
    }
"""


def call(code: str, use_pool: bool, limits: Limits = FAST, inputs=None):
    payload = {"code": textwrap.dedent(code), "entry": "f", "inputs": inputs or [[]]}
    result = run_job("call", payload, limits, use_pool=use_pool)
    slots.settle()  # the sweep of its user id and folders, just after it
    return result


# The host's locale: a login without LANG is the C locale, in which a fresh interpreter
# adds LC_CTYPE to its own environment (PEP 538) and a pooled child must see the same.
@pytest.mark.parametrize("lang", ["C.UTF-8", None])
def test_pooled_child_is_confined_like_a_fresh_one(monkeypatch, lang):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    monkeypatch.delenv("LC_ALL", raising=False)
    if lang is None:
        monkeypatch.delenv("LANG", raising=False)
    else:
        monkeypatch.setenv("LANG", lang)
    slots.shutdown()  # the warm parent starts now, with the secret in the host's environment
    fresh, pooled = call(PROBE, use_pool=False), call(PROBE, use_pool=True)
    assert fresh.status == pooled.status == "ok", (fresh.error, pooled.error)
    assert pooled.value["outputs"] == fresh.value["outputs"]
    found = pooled.value["outputs"][0]
    assert found["secret_visible"] is False and found["cwd_empty"]
    assert found["cwd"] == jail.WORKDIR
    assert found["net"] != "open"
    assert [i.split("=")[0] for i in pooled.isolation] == [i.split("=")[0] for i in fresh.isolation]
    if ROOT:
        assert {"netns", "ipcns"} <= set(pooled.isolation)
        assert found["uid"]


def test_each_pooled_child_gets_its_own_jail():
    code = """
import os
def f():
    found = os.listdir(".") + os.listdir("/tmp")
    open("mine", "w").close()
    open("/tmp/mine", "w").close()
    return found
"""
    first, second = call(code, True), call(code, True)
    assert first.value["outputs"] == second.value["outputs"]
    # Neither saw what the other wrote, nor anything else but folders of the jail's view
    # that lie under /tmp (a checkout in /tmp shows its top folder there).
    in_tmp = {
        q.parts[2] for q in map(Path, sys.path) if q.is_absolute() and q.parts[1:2] == ("tmp",)
    }
    assert set(first.value["outputs"][0]) <= in_tmp
    assert jailcheck.pid_namespace(first) != jailcheck.pid_namespace(second)
    if ROOT:
        uids = [[i for i in r.isolation if i.startswith("uid=")] for r in (first, second)]
        assert uids[0] != uids[1]


def test_warm_parent_holds_no_secret(monkeypatch):
    """The warm parent's own environment (which a child's memory is copied from) is
    scrubbed, whatever the host's holds."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    slots.shutdown()
    assert call("def f():\n    return 1\n", True).status == "ok"
    zygote_pid = pool._zygotes[False].pid
    with open(f"/proc/{zygote_pid}/environ", "rb") as environ:
        assert b"sk-host-secret" not in environ.read()


def test_pooled_timeout_kills_everything_the_child_started():
    started = time.monotonic()
    result = run_job(
        "improve",
        {
            "improver": textwrap.dedent(
                """
                import os, time
                def improve_algorithm(initial_solution, utility, language_model):
                    if os.fork() == 0:
                        os.setsid()
                        while True:
                            time.sleep(0.1)
                    while True:
                        pass
                """
            ),
            "initial_solution": "x = 1\n",
            "language_model": {"budget": 0, "max_responses_per_call": 1},
            "utility": {"name": "u", "description": "d", "budget": 0},
        },
        Limits(wall_s=1.5),
        guard=False,
        use_pool=True,
    )
    slots.settle()
    assert result.status == "timeout"
    assert time.monotonic() - started < 20  # a kill happened (loose bound, not a timing test)
    assert jailcheck.survivors({jailcheck.pid_namespace(result)}) == []


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _zombie(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
    except OSError:
        return True


def test_killed_warm_parent_fails_the_job_in_flight_and_restarts():
    assert call("def f():\n    return 1\n", True).status == "ok"
    zygote_pid = pool._zygotes[False].pid
    slow = "import time\ndef f():\n    time.sleep(3)\n    return 1\n"
    results = []
    thread = threading.Thread(target=lambda: results.append(call(slow, True, Limits(wall_s=20))))
    thread.start()
    time.sleep(1.0)  # the job is running
    os.kill(zygote_pid, signal.SIGKILL)  # as the OOM killer would
    thread.join(30)
    assert not thread.is_alive()
    assert len(results) == 1 and results[0].status == "crash"
    after = call("def f():\n    return 2\n", True)
    assert after.status == "ok" and after.value["outputs"] == [2]
    assert pool._zygotes[False].pid != zygote_pid


@pytest.mark.parametrize("which", ["keeper", "init"])
def test_killed_pooled_child_is_a_crash(monkeypatch, which):
    """A sandbox child killed from outside (as the OOM killer would), its jail's keeper
    or its init, is a failed evaluation, reported once; the pool goes on."""
    assert call("def f():\n    return 1\n", True).status == "ok"
    slots.discard_spares()
    monkeypatch.setattr(slots, "SPARES", 0)  # the running child is the only one
    zygote = pool._zygotes[False]
    slow = "import time\ndef f():\n    time.sleep(3)\n    return 1\n"
    results = []
    thread = threading.Thread(target=lambda: results.append(call(slow, True, Limits(wall_s=20))))
    thread.start()
    time.sleep(1.0)  # confined and running
    (keeper,) = list(zygote._children)
    if which == "keeper":
        os.kill(keeper, signal.SIGKILL)
    else:
        with open(f"/proc/{keeper}/task/{keeper}/children") as children:
            (init,) = [int(pid) for pid in children.read().split()]
        os.kill(init, signal.SIGKILL)
    thread.join(30)
    assert len(results) == 1 and results[0].status == "crash"
    assert "SIGKILL" in (results[0].error or "")
    assert zygote.alive and call("def f():\n    return 3\n", True).value["outputs"] == [3]


def test_concurrent_pooled_jobs_get_their_own_answers():
    results: dict[int, object] = {}

    def one(i: int) -> None:
        results[i] = call("def f(x):\n    return x * x\n", True, inputs=[[i]])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert {i: r.value["outputs"] for i, r in results.items()} == {i: [i * i] for i in range(8)}


@pytest.mark.parametrize("use_pool", [True, False])
def test_output_streams_reach_the_host(use_pool):
    code = "import sys\ndef f():\n    print('out'); print('err', file=sys.stderr)\n    return 0\n"
    result = call(code, use_pool)
    assert result.status == "ok" and result.value["outputs"] == [0]
    assert "out" in result.stdout and "err" in result.stderr


def test_a_forked_host_starts_its_own_pool():
    assert call("def f():\n    return 1\n", True).status == "ok"
    parent_zygote = pool._zygotes[False].pid
    pid = os.fork()
    if pid == 0:  # a copy of the host (multiprocessing's fork, for instance)
        code = 1
        try:
            result = call("def f():\n    return 2\n", True)
            mine = pool._zygotes[False].pid
            code = 0 if result.value["outputs"] == [2] and mine != parent_zygote else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pool._zygotes[False].pid == parent_zygote
    assert call("def f():\n    return 4\n", True).value["outputs"] == [4]


HOST = """
import sys, textwrap
sys.path.insert(0, {root!r})
from stop.sandbox.runner import Limits, run_job
from tests.jailcheck import processes_of
print("ready", flush=True)
run_job("call", {{"code": "def f():\\n    while True:\\n        pass\\n", "entry": "f",
                 "inputs": [[]]}}, Limits(wall_s=60), use_pool={pool})
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    ppid = int(stat.read().rsplit(b")", 1)[-1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.parametrize("use_pool", [True, False])
def test_a_killed_host_takes_its_sandboxes_and_their_workers_with_it(use_pool):
    """Nothing is left to sweep when the host itself is SIGKILLed: every sandbox process,
    the worker that runs the candidate included, dies with its parent."""
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    host = subprocess.Popen(
        [sys.executable, "-c", HOST.format(root=root, pool=use_pool)], stdout=subprocess.PIPE
    )
    try:
        assert host.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the worker runs the candidate
            below = _descendants(host.pid)
            if any(_owner(str(p)) not in (None, 0) and not _zombie(str(p)) for p in below):
                if len(below) >= (4 if use_pool else 3):  # (zygote,) keeper, init, worker
                    break
            time.sleep(0.1)
        time.sleep(0.5)
        below = _descendants(host.pid)
        assert below
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [p for p in below if not _zombie(str(p))]:
        time.sleep(0.1)
    assert [p for p in below if not _zombie(str(p))] == []
