"""Tests of the sandbox: stop.sandbox.runner (host side) with child, confine and jobs.

Every test spawns a real child. Limits are small so the whole file stays fast; no test
asserts how fast anything ran, only loose upper bounds that prove a kill happened.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import textwrap
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stop.sandbox import jail, slots
from stop.sandbox.runner import Limits, SandboxResult, run_job
from tests import jailcheck

ROOT = os.geteuid() == 0
FAST = Limits(wall_s=3)


def call(
    code: str,
    inputs: list[list[Any]] | None = None,
    *,
    entry: str = "f",
    limits: Limits = FAST,
    repeat: int = 1,
    preload: tuple[str, ...] = (),
) -> SandboxResult:
    payload = {
        "code": textwrap.dedent(code),
        "entry": entry,
        "inputs": [[]] if inputs is None else inputs,
        "repeat": repeat,
    }
    return settled(run_job("call", payload, limits, preload=preload))


def improver(code: str, limits: Limits = FAST, guard: bool = False) -> SandboxResult:
    """Run `improve_algorithm` from `code` as an improve job: in the sandbox parent
    itself, where (unlike a timed call) processes and threads may be started once the
    audit-hook guard, which blocks forks, is left out to test the walls beneath it."""
    payload = {
        "improver": textwrap.dedent(code),
        "initial_solution": "x = 1\n",
        "language_model": {"budget": 0, "max_responses_per_call": 1},
        "utility": {"name": "u", "description": "d", "budget": 0},
    }
    return settled(run_job("improve", payload, limits, guard=guard))


def settled(result: SandboxResult) -> SandboxResult:
    """The result once the sweep of its user id and folders, just after it, is done."""
    slots.settle()
    return result


def test_guard_blocks_forks_in_improvers():
    result = improver("import os\ndef improve_algorithm(s, u, m):\n    os.fork()\n", guard=True)
    value = reply(result)
    assert value["outcome"] == "crash" and "blocked by the stop sandbox: fork" in value["error"]
    assert result.findings == ["blocked: fork (os.fork)"]


def reply(result: SandboxResult) -> dict[str, Any]:
    """The child's reply, after checking that the host side saw a clean run."""
    assert result.status == "ok", (result.error, result.stderr)
    assert isinstance(result.value, dict), result
    return result.value


def outputs(result: SandboxResult) -> list[Any]:
    value = reply(result)
    assert value["outcome"] == "ok", value
    return value["outputs"]


def sandbox_uid(result: SandboxResult) -> int:
    uids = [int(x.split("=", 1)[1]) for x in result.isolation if x.startswith("uid=")]
    assert len(uids) == 1, result.isolation
    return uids[0]


def _state(stat_path: str) -> str:
    with open(stat_path, "rb") as f:
        return f.read().rsplit(b")", 1)[-1].split()[0].decode()


def live_pids_of_uid(uid: int) -> list[int]:
    """Processes with any thread of real or effective `uid` that is not a zombie.

    Threads are checked one by one: a thread-group leader can be a zombie while its
    other threads still run.
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()[1:3]
            if str(uid) not in uids:
                continue
            tasks = os.listdir(f"{entry.path}/task")
            if any(_state(f"{entry.path}/task/{t}/stat") != "Z" for t in tasks):
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return found


def survivors(uid: int, grace_s: float = 2.0) -> list[int]:
    """Live processes of `uid`, after giving killed ones `grace_s` to finish dying."""
    end = time.monotonic() + grace_s
    while True:
        left = live_pids_of_uid(uid)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def assert_no_survivors(result: SandboxResult) -> None:
    """Nothing is left of the jail (both modes), nor, as root, of its private uid."""
    left = jailcheck.survivors({jailcheck.pid_namespace(result)})
    assert not left, f"processes of the sandbox's jail survived: {left}"
    if ROOT:
        left = survivors(sandbox_uid(result))
        kill_all(left)  # never leave a runaway behind, even when the test fails
        assert not left, f"processes of the sandbox uid survived: {left}"


# --- results and their conversion to plain data ---------------------------------------


def test_outputs_one_per_input_with_times():
    result = call("def f(a, b):\n    return a + b\n", [[1, 2], [10, 20], ["x", "y"]], repeat=3)
    value = reply(result)
    assert value["outcome"] == "ok"
    assert value["outputs"] == [3, 30, "xy"]
    assert len(value["times"]) == 3
    assert all(isinstance(t, float) and t >= 0 for t in value["times"])
    assert result.returncode in (0, None)  # None: a pooled child, not waited for once done
    assert result.error is None


def test_module_body_runs_afresh_for_every_call():
    # A module-level cache must not carry results from one call (or repeat) to the next.
    code = """
    calls = []
    def f(x):
        calls.append(x)
        return len(calls)
    """
    assert outputs(call(code, [[1], [2], [3]], repeat=2)) == [1, 1, 1]


def test_tuples_become_lists_and_plain_values_pass():
    code = """
    def f():
        return (1, (2, 3), [4, (5,)], {"k": (None, True, 1.5, "s")})
    """
    assert outputs(call(code)) == [[1, [2, 3], [4, [5]], {"k": [None, True, 1.5, "s"]}]]


def test_bool_and_int_stay_distinct():
    out = outputs(call("def f():\n    return [True, 1, 1.0]\n"))[0]
    assert [type(x) for x in out] == [bool, int, float]


def test_non_finite_floats_come_back_as_strings():
    code = """
    def f():
        return [float("nan"), float("inf"), -float("inf"), 0.5]
    """
    assert outputs(call(code)) == [["nan", "inf", "-inf", 0.5]]


@pytest.mark.parametrize(
    "expr",
    [
        "type('MyInt', (int,), {})(3)",
        "type('MyStr', (str,), {})('x')",
        "type('MyList', (list,), {})([1])",
        "object()",
        "{1, 2}",
        "{1: 'int key'}",
        "b'bytes'",
        "[1, [2, object()]]",
        "1j",
    ],
)
def test_non_plain_values_are_wrong_answers(expr):
    value = reply(call(f"def f():\n    return {expr}\n"))
    assert value["outcome"] == "wrong_answer", value
    assert "outputs" not in value
    assert value["error"]


def test_lying_subclass_is_refused():
    # An int subclass that claims to equal everything must not pass as an answer.
    code = """
    class Liar(int):
        def __eq__(self, other):
            return True
        __hash__ = int.__hash__
    def f():
        return Liar(7)
    """
    assert reply(call(code))["outcome"] == "wrong_answer"


def test_too_deeply_nested_value_is_wrong_answer():
    code = """
    def f():
        v = 0
        for _ in range(50):
            v = [v]
        return v
    """
    value = reply(call(code))
    assert value["outcome"] == "wrong_answer"
    assert "deep" in value["error"]


def test_oversized_reply_is_refused():
    result = call("def f():\n    return 'x' * (3 << 20)\n", limits=Limits(wall_s=3, message_mb=1))
    assert result.status != "ok"
    assert result.value is None
    assert_no_survivors(result)


def test_oversized_reply_is_reported_as_crash():
    result = call("def f():\n    return 'x' * (3 << 20)\n", limits=Limits(wall_s=10, message_mb=1))
    assert result.status == "crash"
    assert "oversized" in (result.error or "")


# --- broken programs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    ["def f(:\n    return 1\n", "def f():\nreturn 1\n", "def f():\n    return 1\x00\n"],
    ids=["bad-signature", "bad-indent", "null-byte"],
)
def test_syntax_error(code):
    value = reply(call(code))
    assert value["outcome"] == "syntax_error", value
    assert value["error"].startswith("line ")


@pytest.mark.parametrize(
    "code", ["def g():\n    return 1\n", "f = 3\n", ""], ids=["other-name", "not-callable", "empty"]
)
def test_missing_entry_is_a_crash(code):
    value = reply(call(code))
    assert value["outcome"] == "crash"
    assert "'f'" in value["error"]


def test_exception_reports_line_number():
    code = """\
    def helper(x):
        return 1 / x

    def f(x):
        return helper(x)
    """
    value = reply(call(code, [[1], [0]]))
    assert value["outcome"] == "crash"
    assert value["error"].startswith("line 2:"), value["error"]
    assert "ZeroDivisionError" in value["error"]
    assert "outputs" not in value


def test_exception_at_module_level_reports_line_number():
    value = reply(call("x = 1\ny = undefined_name\ndef f():\n    return 1\n"))
    assert value["outcome"] == "crash"
    assert value["error"].startswith("line 2:")
    assert "NameError" in value["error"]


@pytest.mark.parametrize(
    "body, needle",
    [
        ("import sys\n    sys.exit(3)", "SystemExit"),
        ("raise SystemExit", "SystemExit"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ],
    ids=["sys.exit(3)", "SystemExit", "KeyboardInterrupt"],
)
def test_exit_inside_function_is_a_crash(body, needle):
    value = reply(call(f"def f():\n    {body}\n"))
    assert value["outcome"] == "crash"
    assert needle in value["error"]
    assert "outputs" not in value


@pytest.mark.parametrize("code", ["os._exit(0)", "os._exit(5)", "os.kill(os.getpid(), 9)"])
def test_hard_exit_is_a_crash_without_outputs(code):
    # The program runs in a forked worker: its death is reported by the sandbox parent.
    value = reply(call(f"import os\ndef f():\n    {code}\n    return 1\n"))
    assert value["outcome"] == "crash"
    assert "outputs" not in value
    # os.kill is blocked by the guard before it can fire; the exits end the worker.
    error = value["error"]
    assert "exited before returning" in error or "blocked by the stop sandbox" in error


def test_unknown_job_kind_is_a_crash():
    result = run_job("no-such-kind", {}, Limits(wall_s=2))
    assert result.status == "crash"
    assert result.value is None
    assert "KeyError" in result.stderr


# --- time limit and killing ---------------------------------------------------------


def test_infinite_loop_times_out_and_is_killed():
    code = """
    def f():
        while True:
            pass
    """
    result = call(code, limits=Limits(wall_s=1))
    assert result.status == "timeout"
    assert result.value is None
    assert "timed out" in result.error
    assert result.returncode == -signal.SIGKILL
    assert result.wall_s < 20
    assert_no_survivors(result)


def test_loop_ignoring_sigterm_is_killed():
    code = """
    import signal
    def f():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("ignoring", flush=True)
        while True:
            pass
    """
    result = call(code, limits=Limits(wall_s=1), preload=("signal",))
    assert "ignoring" in result.stdout  # the handlers really were installed
    assert result.status == "timeout"
    assert result.wall_s < 20
    assert_no_survivors(result)


def test_sleeping_child_times_out():
    result = call("import time\ndef f():\n    time.sleep(60)\n", limits=Limits(wall_s=1))
    assert result.status == "timeout"
    assert result.wall_s < 20


def test_timed_call_cannot_start_processes_or_threads():
    code = """
    import os, _thread
    def f(kind):
        if kind == "fork":
            os.fork()
        else:
            _thread.start_new_thread(print, ())
        return "started"
    """
    for kind in ("fork", "thread"):
        value = reply(call(code, [[kind]]))
        assert value["outcome"] == "crash", value
        error = value["error"]
        # A fork is stopped by the guard first; a thread by the process limit.
        assert (
            "Resource temporarily unavailable" in error
            or "can't start" in error
            or "blocked by the stop sandbox: fork" in error
        )


@pytest.mark.parametrize("then", ["return str(pid)", "time.sleep(60)"], ids=["returns", "hangs"])
def test_setsid_grandchild_is_killed(then):
    code = f"""
    import os, time
    def improve_algorithm(initial_solution, utility, language_model):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            if os.fork() == 0:
                os.setsid()
                while True:
                    time.sleep(1)
            while True:
                time.sleep(1)
        print(pid, flush=True)
        {then}
    """
    result = improver(code, limits=Limits(wall_s=1.5))
    if then == "return str(pid)":
        assert reply(result)["program"] == result.stdout.split()[0]
    else:
        assert result.status == "timeout"
    assert_no_survivors(result)


def test_fork_limit_and_forked_children_killed():
    code = """
    import os, time
    def improve_algorithm(initial_solution, utility, language_model):
        for _ in range(200):
            if os.fork() == 0:
                while True:
                    time.sleep(1)
        return "all forked"
    """
    result = improver(code, limits=Limits(wall_s=2, processes=8))
    value = reply(result)
    assert value["outcome"] == "crash", value
    assert "BlockingIOError" in value["error"] or "Resource temporarily" in value["error"]
    assert_no_survivors(result)


def test_threads_of_a_zombie_leader_are_killed():
    code = """
    import ctypes, os, time, _thread
    def spin():
        while True:
            time.sleep(0.05)
    def improve_algorithm(initial_solution, utility, language_model):
        pid = os.fork()
        if pid == 0:
            os.setsid()
            _thread.start_new_thread(spin, ())
            time.sleep(0.1)
            ctypes.CDLL(None).pthread_exit(None)
        time.sleep(0.4)
        return str(pid)
    """
    result = improver(code, limits=Limits(wall_s=2))
    assert reply(result)["outcome"] == "ok"
    assert_no_survivors(result)


# --- resource limits ----------------------------------------------------------------


def test_memory_bomb_is_contained():
    result = call("def f():\n    return len(bytearray(4 << 30))\n", limits=Limits(wall_s=3))
    if result.status == "ok":
        value = result.value
        assert value["outcome"] == "crash", value
        assert "MemoryError" in value["error"]
    else:
        assert result.status == "crash"
    # The host is fine and the next sandbox works.
    assert len(bytearray(1 << 20)) == 1 << 20
    assert outputs(call("def f():\n    return 1\n")) == [1]


def test_rlimits_are_applied():
    code = """
    import resource
    def f():
        return [resource.getrlimit(r)[0] for r in (
            resource.RLIMIT_AS, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE,
            resource.RLIMIT_CORE)]
    """
    limits = Limits(wall_s=3, memory_mb=900, file_mb=3, open_files=40)
    assert outputs(call(code, limits=limits)) == [[900 << 20, 3 << 20, 40, 0]]


def test_small_stdout_and_stderr_are_kept():
    code = """
    import sys
    def f():
        print("hello out")
        print("hello err", file=sys.stderr)
        return 1
    """
    result = call(code)
    assert outputs(result) == [1]
    assert "hello out" in result.stdout
    assert "hello err" in result.stderr


def test_huge_stdout_is_cut_off_and_tail_is_bounded():
    limits = Limits(wall_s=3, tail_chars=1000)
    result = call("def f():\n    print('x' * (100 << 20))\n    return 1\n", limits=limits)
    assert not (result.status == "ok" and result.value.get("outcome") == "ok"), result.value
    assert 0 < len(result.stdout) <= limits.tail_chars
    assert len(result.stderr) <= limits.tail_chars
    assert outputs(call("def f():\n    return 2\n")) == [2]


def test_file_size_limit_applies_to_files():
    code = """
    def f():
        with open("big", "wb") as fh:
            fh.write(b"x" * (4 << 20))
        return 1
    """
    value = reply(call(code, limits=Limits(wall_s=3, file_mb=1)))
    assert value["outcome"] == "crash"
    assert "File too large" in value["error"] or "Errno 27" in value["error"]


# --- environment, filesystem, identity, network ------------------------------------


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("MY_TOKEN", "tok-secret-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    result = call("import os\ndef f():\n    return [dict(os.environ), os.getcwd()]\n")
    env, cwd = outputs(result)[0]
    assert isinstance(env, dict) and "PATH" in env
    for key in ("OPENAI_API_KEY", "MY_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        assert key not in env
    dumped = json.dumps(result.value)
    for secret in ("sk-secret", "tok-secret-value", "aws-secret-value"):
        assert secret not in dumped
    assert cwd == jail.WORKDIR
    assert env["HOME"] == jail.HOME
    assert env["TMPDIR"] == "/tmp"


def test_workdir_is_fresh_private_and_removed():
    code = """
    import os
    def f():
        before = sorted(os.listdir("."))
        with open("scratch.txt", "w") as fh:
            fh.write("hi")
        return [os.getcwd(), before, open("scratch.txt").read()]
    """
    cwd, before, text = outputs(call(code))[0]
    assert before == []
    assert text == "hi"
    assert cwd == jail.WORKDIR
    # Every run gets its own directory: the next one starts empty again.
    assert outputs(call(code))[0][1] == []


@pytest.mark.parametrize("path", ["/root/.bashrc", "/etc/shadow", "/root/.config"])
def test_files_outside_the_view_cannot_be_read(path):
    code = f"""
    import os
    def f():
        if os.path.isdir({path!r}):
            return os.listdir({path!r})
        with open({path!r}, "rb") as fh:
            return len(fh.read())
    """
    value = reply(call(code))
    assert value["outcome"] == "crash", value
    assert "FileNotFoundError" in value["error"]  # not in the jail's view at all


@pytest.mark.parametrize("path", ["/root/stop-sandbox-probe", "/etc/stop-sandbox-probe"])
def test_system_directories_cannot_be_written(path):
    code = f"""
    def f():
        with open({path!r}, "w") as fh:
            fh.write("pwned")
        return "written"
    """
    try:
        value = reply(call(code))
        assert value["outcome"] == "crash", value
        error = value["error"]
        assert "Read-only file system" in error or "blocked by the stop sandbox" in error
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_runs_as_the_sandbox_user_in_its_own_namespaces():
    code = """
    import os
    def f():
        return [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]
    """
    result = call(code)
    assert result.isolation[0] == "rlimits"
    assert {"userns", "mntns", "netns", "ipcns", "no_new_privs"} <= set(result.isolation)
    me = jail.SANDBOX_ID
    ((*ids, groups),) = outputs(result)
    assert ids == [me, me, me, me]
    # As root, no supplementary groups; an ordinary user's stay (only a privileged
    # process may drop them), mapped to the sandbox's group or to "nobody".
    assert groups == [] if ROOT else set(groups) <= {me, 65534}
    if ROOT:  # outside, a private uid, a new one each run
        uid = sandbox_uid(result)
        assert uid != 0
        assert sandbox_uid(call("def f():\n    return 1\n")) != uid


def test_cannot_regain_root():
    code = """
    import os
    def f():
        os.setuid(0)
        return "root again"
    """
    value = reply(call(code))
    assert value["outcome"] == "crash"
    # root is not even mapped in the sandbox's user namespace
    assert "PermissionError" in value["error"] or "Invalid argument" in value["error"]


@pytest.mark.parametrize("preload", [(), ("socket",)], ids=["plain", "socket-preloaded"])
def test_network_is_cut(preload):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        # socket.socket + connect, not create_connection: getaddrinfo needs the idna
        # codec, which a child cannot import after dropping its privileges.
        code = f"""
        import errno
        def f():
            try:
                import socket
            except ImportError as exc:
                return ["import", type(exc).__name__]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", {port}))
            except OSError as exc:
                return ["connect", errno.errorcode.get(exc.errno, str(exc))]
            s.sendall(b"leak")
            return ["connected", ""]
        """
        result = call(code, preload=preload)
        assert "netns" in result.isolation
        kind, why = outputs(result)[0]
        if preload:  # socket is importable, so the connection itself must fail
            assert kind == "connect", why
        else:
            assert kind in ("import", "connect"), why
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


SUM_OF_SQUARES = """
def f(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
"""


def test_the_time_is_the_kernels_whatever_the_program_does_to_clocks():
    """The harness's clocks are not asked: rebinding them changes nothing."""
    forger = (
        "import sys, time\n"
        "for name in ('stop.sandbox.worker', 'stop.sandbox.jobs'):\n"
        "    if name in sys.modules:\n"
        "        sys.modules[name]._perf_counter = lambda: 0.0\n"
        "time.perf_counter = time.monotonic = time.process_time = lambda: 0.0\n"
    ) + SUM_OF_SQUARES
    honest, forged = (reply(call(c, [[1_000_000]])) for c in (SUM_OF_SQUARES, forger))
    assert honest["outcome"] == forged["outcome"] == "ok", (honest, forged)
    assert forged["outputs"] == honest["outputs"]
    # A million iterations take tens of milliseconds: the same tens either way.
    assert forged["times"][0] > 0.3 * honest["times"][0] > 0.003, (honest, forged)


def test_honest_fast_program_is_not_mistaken_for_a_forger():
    value = reply(call("def f(n):\n    return n + 1\n", [[1], [2], [3]], repeat=5))
    assert value["outcome"] == "ok", value
    assert value["outputs"] == [2, 3, 4]


def test_program_cannot_forge_reply_on_the_channel():
    code = """
    import os, sys
    def f():
        fake = {"type": "result", "body": {"outcome": "ok", "outputs": [42], "times": [0.0]}}
        os.write(int(sys.argv[2]), (repr(fake).replace("'", '"') + "\\n").encode())
        os._exit(0)
    """
    result = call(code)
    assert not (result.status == "ok" and result.value.get("outputs") == [42]), result


# --- property: plain values round-trip ----------------------------------------------


def _as_json(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_json(v) for k, v in value.items()}
    return value


_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_plain_values_round_trip(value):
    got = outputs(call(f"def f():\n    return {value!r}\n"))
    assert len(got) == 1
    # Compare as canonical JSON: 1, 1.0 and True are different answers.
    assert json.dumps(got[0], sort_keys=True) == json.dumps(_as_json(value), sort_keys=True)
    if isinstance(value, float):
        assert math.copysign(1.0, got[0]) == math.copysign(1.0, value)


def test_guard_cannot_be_torn_down_from_inside():
    code = """
    import os, sys
    guard = sys.modules["stop.sandbox.guard"]
    guard._BLOCKED.clear()
    guard._FILE_CHANGES.clear()
    guard._inside = lambda *args: True
    def f():
        os.kill(os.getpid(), 0)
        return open("/tmp/stop-guard-probe", "w").name
    """
    value = reply(call(code))
    assert value["outcome"] == "crash", value
    assert "blocked by the stop sandbox: signal a process" in value["error"]
    assert not os.path.exists("/tmp/stop-guard-probe")
