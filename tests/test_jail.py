"""The jail (stop/sandbox/jail.py): what sandboxed code can see of the filesystem and the
processes of the machine, and what it can do to them. Run as root by CI, and again as an
ordinary user by scripts/test-as-user: every test here holds in both modes.
"""

from __future__ import annotations

import base64
import bz2
import importlib.util
import json
import lzma
import os
import secrets
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stop.errors import BadInput
from stop.sandbox import jail, slots
from stop.sandbox.runner import Limits, SandboxResult, run_job
from tests import jailcheck
from tests.helpers import FIB, ROOT, run_stop
from tests.openai_server import CannedServer

AS_ROOT = os.geteuid() == 0


def call(code: str, *, read_paths: tuple[str, ...] = (), guard: bool = True) -> Any:
    """Run `f()` from `code` in a sandbox and return its output (the run must succeed)."""
    payload = {"code": textwrap.dedent(code), "entry": "f", "inputs": [[]]}
    result = run_job("call", payload, Limits(wall_s=20), read_paths=read_paths, guard=guard)
    slots.settle()
    assert result.status == "ok", (result.error, result.stderr)
    assert result.value["outcome"] == "ok", result.value
    return result.value["outputs"][0]


def improver(code: str, *, read_paths: tuple[str, ...] = ()) -> SandboxResult:
    """Run `improve_algorithm` from `code` in the jail's init, guard left out: the walls
    beneath it are under test."""
    payload = {
        "improver": textwrap.dedent(code),
        "initial_solution": "x = 1\n",
        "language_model": {"budget": 0, "max_responses_per_call": 1},
        "utility": {"name": "u", "description": "d", "budget": 0},
    }
    result = run_job("improve", payload, Limits(wall_s=10), read_paths=read_paths, guard=False)
    slots.settle()
    return result


# --- what the jail shows -----------------------------------------------------------


def _components(paths: list[str], under: str) -> set[str]:
    """The names directly inside `under` that lead to one of `paths`."""
    prefix = under.rstrip("/") + "/"
    return {p[len(prefix) :].split("/")[0] for p in paths if p.startswith(prefix)}


def test_the_view_holds_what_programs_need_and_nothing_else():
    seen = call(
        """
        import os
        def ls(path):
            return sorted(os.listdir(path)) if os.path.isdir(path) else None
        def f():
            return {p: ls(p) for p in ("/", "/home", "/etc", "/root", "/srv", @CHECKOUT@)}
        """.replace("@CHECKOUT@", repr(str(ROOT)))
    )
    view = jail.view()
    top = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "dev", "proc", "etc"}
    top |= {"tmp", "var", "run", "home", "sandbox"}
    assert set(seen["/"]) <= top | _components(view, "/"), seen["/"]
    assert set(seen["/home"]) == {"sandbox"} | _components(view, "/home")
    assert set(seen["/etc"]) <= {"passwd", "group", "ld.so.cache", "localtime"}
    assert seen["/srv"] is None or set(seen["/srv"]) == _components(view, "/srv")
    if seen["/root"] is not None:  # only the way to a Python installed under /root
        assert set(seen["/root"]) == _components(view, "/root")
    # Of the checkout: stop's own packages (and a virtual environment inside it), never
    # its tests, runs, caches or history.
    checkout = set(seen[str(ROOT)])
    assert {"stop", "utilities", "seed_improvers"} <= checkout
    assert checkout <= {"stop", "utilities", "seed_improvers"} | _components(view, str(ROOT))
    assert not checkout & {"tests", "runs", ".git", "README.md", "pyproject.toml"}


def test_files_outside_the_view_are_hidden_even_if_anyone_may_read_them(tmp_path):
    token = secrets.token_hex(8)
    places = [
        tmp_path / "secret.txt",  # under /tmp, as every test's folder is
        Path("/var/tmp") / f"stop-jail-{token}",
        ROOT / f".stop-jail-{token}",  # beside the package, in the checkout
        Path.home() / f".stop-jail-{token}",
        FIB,  # the target itself, and the example beside it
    ]
    if AS_ROOT:
        Path("/srv").mkdir(exist_ok=True)
        places.append(Path("/srv") / f"stop-jail-{token}")
    made = [p for p in places if p != FIB]
    try:
        for path in made:
            path.write_text(f"secret-{token}\n")
            path.chmod(0o644)
        os.chmod(tmp_path, 0o755)
        found = call(
            f"""
            def f():
                found = {{}}
                for path in {[str(p) for p in places]!r}:
                    try:
                        found[path] = open(path).read()
                    except OSError as exc:
                        found[path] = type(exc).__name__
                return found
            """
        )
    finally:
        for path in made:
            path.unlink(missing_ok=True)
    assert found == {str(p): "FileNotFoundError" for p in places}


def test_processes_outside_the_jail_and_their_environment_are_hidden(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-jail-canary")
    seen = call(
        """
        import os
        def f():
            pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
            secrets = []
            for pid in pids:
                try:
                    if b"canary" in open(f"/proc/{pid}/environ", "rb").read():
                        secrets.append(pid)
                except OSError:
                    pass
            host = os.path.exists(@HOST@)
            return [pids, secrets, host]
        """.replace("@HOST@", repr(f"/proc/{os.getpid()}/environ"))
    )
    pids, leaked, host_visible = seen
    assert 1 in pids and max(pids) < 20, pids  # the jail's init, its workers, no other
    assert leaked == [] and host_visible is False


@pytest.mark.parametrize(
    "module",
    ["base64", "bz2", "lzma", "glob", "sqlite3", "pydantic", "rich", "yaml", "networkx", "sympy"],
)
def test_any_module_installed_here_imports_inside(module):
    """Imports are ordinary: nothing is preloaded for these, and none is refused."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed where stop runs")
    found = call(f"import {module}\ndef f():\n    return {module}.__name__\n")
    assert found == module


def test_a_candidate_that_imports_what_it_needs_runs_correctly():
    value = call(
        """
        import base64, bz2, lzma
        def f():
            data = bytes(range(256)) * 40
            return [base64.b64encode(bz2.compress(data)).decode(), len(lzma.compress(data))]
        """
    )
    data = bytes(range(256)) * 40
    assert value == [base64.b64encode(bz2.compress(data)).decode(), len(lzma.compress(data))]


# --- what the jail bounds ----------------------------------------------------------


def _host_scratch() -> dict[str, set[str]]:
    """What the host's own shared folders hold, but for sandboxes' own host folders."""
    found = {}
    for folder in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        try:
            found[folder] = {n for n in os.listdir(folder) if not n.startswith("stop-")}
        except OSError:
            found[folder] = set()
    return found


def test_files_are_bounded_like_memory_and_leave_nothing_behind():
    before = _host_scratch()
    found = call(
        """
        import errno, os
        CHUNK = b"x" * (1 << 20)
        def fill(path):
            written = 0
            try:
                with open(path, "wb") as f:
                    for _ in range(1024):
                        f.write(CHUNK)
                        f.flush()
                        written += len(CHUNK)
            except OSError as exc:
                return [written, errno.errorcode.get(exc.errno, str(exc.errno))]
            return [written, None]
        def f():
            fd = os.open("big", os.O_RDWR | os.O_CREAT)
            try:
                os.posix_fallocate(fd, 0, 512 << 20)
                fallocated = None
            except OSError as exc:
                fallocated = errno.errorcode.get(exc.errno, str(exc.errno))
            os.close(fd)
            os.unlink("big")
            return {"fallocate": fallocated, "shm": fill("/dev/shm/fill"), "tmp": fill("/tmp/fill")}
        """
    )
    assert found["fallocate"] in ("ENOSPC", "EFBIG"), found
    limit = jail.SCRATCH_MB << 20
    for where in ("shm", "tmp"):
        written, error = found[where]
        assert error in ("ENOSPC", "EFBIG") and written <= limit, found
    assert found["shm"][0] + found["tmp"][0] <= limit  # one bound for all of them
    assert _host_scratch() == before


def test_a_setuid_root_program_run_from_a_daemon_gains_nothing_and_dies(tmp_path):
    """As in the held-out case: a daemon that cleared its parent-death signal and left its
    session execs a setuid-root helper with a pipe on its stdin. The helper runs as the
    sandbox user, and the end of the jail ends it."""
    helper, read_paths = "/usr/lib/polkit-1/polkit-agent-helper-1", ()
    if AS_ROOT:  # a setuid-root program of our own, shown to the jail read-only
        shutil.copy("/usr/bin/sleep", tmp_path / "sleep-as-root")
        os.chmod(tmp_path / "sleep-as-root", 0o4755)
        os.chmod(tmp_path, 0o755)
        helper, read_paths = str(tmp_path / "sleep-as-root"), (str(tmp_path),)
    elif not (os.path.exists(helper) and os.stat(helper).st_mode & stat.S_ISUID):
        pytest.skip("no setuid-root program to try here")
    result = improver(
        """
        import ctypes, os, time
        def improve_algorithm(initial_solution, utility, language_model):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                ctypes.CDLL(None).prctl(1, 0)  # no parent-death signal
                os.setsid()
                os.dup2(r, 0)
                os.execv(@HELPER@, [@HELPER@, "3600"])
            for _ in range(100):  # until the exec is done
                status = open(f"/proc/{pid}/status").read()
                if "sleep" in status.split()[1] or "polkit" in status.split()[1]:
                    break
                time.sleep(0.02)
            wanted = ("Uid", "Gid", "CapEff")
            return repr([line for line in status.splitlines() if line.startswith(wanted)])
        """.replace("@HELPER@", repr(helper)),
        read_paths=read_paths,
    )
    assert result.status == "ok" and result.value["outcome"] == "ok", result
    ids = eval(result.value["program"])  # noqa: S307 - our own repr of a list of strings
    me = jail.SANDBOX_ID
    assert ids[0].split()[1:] == [str(me)] * 4, ids  # real, effective, saved, fs uid
    assert ids[1].split()[1:] == [str(me)] * 4, ids
    assert ids[2].split()[1] == "0" * 16, ids  # no capabilities
    assert jailcheck.survivors({jailcheck.pid_namespace(result)}) == []


def test_the_jail_allows_no_user_namespace_of_its_own():
    """In one, a sandbox could mount a tmpfs of its own with no size limit."""
    found = call(
        """
        import ctypes
        def f():
            libc = ctypes.CDLL(None, use_errno=True)
            return [libc.unshare(0x10000000), ctypes.get_errno()]
        """,
        guard=False,
    )
    assert found[0] == -1 and found[1] in (28, 1)  # ENOSPC (the limit), or EPERM


def test_no_process_of_the_jail_may_trace_its_init():
    """The init times candidates: a worker that could ptrace it could rewrite the time."""
    found = call(
        """
        import ctypes
        def f():
            libc = ctypes.CDLL(None, use_errno=True)
            libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
            return [libc.ptrace(16, 1, None, None), ctypes.get_errno()]  # PTRACE_ATTACH
        """,
        guard=False,
    )
    assert found == [-1, 1]  # EPERM


def test_read_paths_are_shown_read_only(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "instances.json").write_text("[1, 2, 3]")
    os.chmod(tmp_path, 0o755)
    os.chmod(data, 0o755)
    found = call(
        f"""
        import json
        def f():
            values = json.load(open({str(data / "instances.json")!r}))
            try:
                open({str(data / "new")!r}, "w")
                wrote = True
            except OSError as exc:
                wrote = type(exc).__name__
            return [values, wrote]
        """,
        read_paths=(str(data),),
        guard=False,
    )
    assert found == [[1, 2, 3], "OSError"]
    assert not (data / "new").exists()
    with pytest.raises(BadInput, match="no such file"):
        call("def f():\n    return 1\n", read_paths=(str(tmp_path / "missing"),))


# --- the model channel -------------------------------------------------------------

HUNTER = '''
import os
import sys

def _hunt():
    """Everything this improver can read that is not the system's or Python's own."""
    found, files = [], 0
    skip = ("/usr", "/proc", "/sys", "/dev", sys.base_prefix, sys.prefix)
    for root, dirs, names in os.walk("/"):
        if root != "/" and root.startswith(skip):
            dirs[:] = []
            continue
        for name in names:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    found.append(f.read(4096).decode("utf-8", "replace"))
                files += 1
            except OSError:
                pass
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for what in ("environ", "cmdline"):
                try:
                    data = open(f"/proc/{pid}/{what}", "rb").read()
                    found.append(data.decode("utf-8", "replace"))
                except OSError:
                    pass
    found.append(repr(dict(os.environ)))
    return f"read {files} files: " + "\\n".join(found)


def improve_algorithm(initial_solution, utility, language_model):
    language_model.prompt("You are a helpful assistant.", _hunt())
    return initial_solution
'''


def test_an_improver_hunting_for_secrets_sends_nothing_it_should_not_see(tmp_path):
    """Whatever an improver can read, it can send to the model inside a prompt: the test
    is what the (loopback) model server received."""
    token = secrets.token_hex(8)
    key = f"sk-hunted-{token}"
    planted = [
        Path.home() / f".stop-hunt-{token}",
        ROOT / f".stop-hunt-{token}",
        Path("/var/tmp") / f"stop-hunt-{token}",
        tmp_path / "runs" / f"stop-hunt-{token}",
    ]
    (tmp_path / "runs").mkdir()
    (tmp_path / "hunter.py").write_text(HUNTER)
    try:
        for path in planted:
            path.write_text(f"planted-{token}\n")
            path.chmod(0o644)
        with CannedServer(["no code here"]) as server:
            proc = run_stop(
                *("improve", "--target", str(FIB), "--improver", str(tmp_path / "hunter.py")),
                *("--base-url", server.url, "--model", "m", "--api-key-env", "HUNTED_KEY"),
                *("--runs-dir", str(tmp_path / "runs"), "--json", "--llm-budget", "2"),
                cwd=tmp_path,
                env={"HUNTED_KEY": key, "MY_TOKEN": f"tok-hunted-{token}"},
            )
            requests = list(server.requests)
    finally:
        for path in planted:
            path.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    prompts = [json.dumps(r["body"]["messages"]) for r in requests]
    hunted = [p for p in prompts if "read " in p and " files: " in p]
    assert hunted, prompts  # the improver did hunt, and its prompt arrived
    assert "sandbox:x:" in hunted[0]  # it read what the jail shows (its own /etc/passwd)
    for text in prompts:
        assert token not in text
    assert all(r["auth"] == f"Bearer {key}" for r in requests)  # the key only as the key


# The kind of rewrite a real model writes: ordinary modules, none of them preloaded.
IMPORTING = """Iterate instead of recursing; check the arithmetic along the way.

```python
import base64
import bz2
import glob


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    assert bz2.decompress(bz2.compress(base64.b64encode(b"x"))) == b"eA=="
    assert glob.escape("[") == "[[]"
    return a
```
"""
MISSING = "```python\nimport no_such_module\n\n\ndef fib(n):\n    return n\n```\n"


def test_improve_finds_and_keeps_a_rewrite_that_imports_ordinary_modules(tmp_path):
    """`stop improve` against a loopback OpenAI-compatible server: the rewrite that
    imports ordinary modules is scored like any other, and kept as the best."""
    runs = tmp_path / "runs"
    with CannedServer([IMPORTING, MISSING]) as server:
        proc = run_stop(
            *("improve", "--target", str(FIB), "--base-url", server.url, "--model", "m"),
            *("--runs-dir", str(runs), "--json", "--samples", "2"),
            cwd=tmp_path,
        )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["improved"], result  # its imports are timed too, as module-level work
    assert "import bz2" in Path(result["best_path"]).read_text()
    statuses = {c["evaluation"]["status"] for c in result["candidates"]}
    assert "crash" in statuses  # the missing module: a crash, scored 0, not kept


# --- when no jail can be built -----------------------------------------------------

NO_USER_NAMESPACES = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.geteuid(), os.getegid()
assert libc.unshare(0x10000000) == 0, ctypes.get_errno()
open("/proc/self/setgroups", "w").write("deny")
open("/proc/self/uid_map", "w").write(f"{uid} {uid} 1")
open("/proc/self/gid_map", "w").write(f"{gid} {gid} 1")
open("/proc/sys/user/max_user_namespaces", "w").write("0")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _without_user_namespaces(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`stop ARGS` where the kernel refuses every new user namespace, as it does where
    they are switched off (a sysctl, some containers)."""
    wrapper = tmp_path / "no_userns.py"
    wrapper.write_text(NO_USER_NAMESPACES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STOP_"))}
    return subprocess.run(
        [sys.executable, str(wrapper), "-m", "stop.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_jail_that_cannot_be_built_is_a_one_line_error(tmp_path, script):
    replies = script(["no code"])
    runs = tmp_path / "runs"
    args = ("improve", "--target", str(FIB), "--script", str(replies), "--runs-dir", str(runs))
    proc = _without_user_namespaces(tmp_path, *args)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot build the sandbox's jail" in lines[0], proc.stderr
    assert "--weak-sandbox" in lines[0] and "Traceback" not in proc.stderr
    assert not runs.exists()  # nothing half-written


@pytest.mark.skipif(AS_ROOT, reason="a weak sandbox drops root to a uid this namespace lacks")
def test_the_weak_sandbox_runs_only_when_asked_and_is_recorded(tmp_path, script):
    replies = script(["no code"])
    runs = tmp_path / "runs"
    proc = _without_user_namespaces(
        tmp_path,
        *("--weak-sandbox", "improve", "--target", str(FIB), "--script", str(replies)),
        *("--runs-dir", str(runs), "--json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "weak sandbox" in proc.stderr
    (config,) = runs.glob("*/config.json")
    assert json.loads(config.read_text())["sandbox"] == "weak"


def test_a_run_records_its_jail(tmp_path, script):
    runs = tmp_path / "runs"
    proc = run_stop(
        *("improve", "--target", str(FIB), "--script", str(script(["no code"]))),
        *("--runs-dir", str(runs), "--json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (config,) = runs.glob("*/config.json")
    assert json.loads(config.read_text())["sandbox"] == "jail"
