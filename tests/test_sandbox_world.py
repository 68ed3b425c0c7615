"""Tests of what a sandboxed program sees of the world: its environment, the file system,
its identity and the network.
"""

from __future__ import annotations

import json
import os
import socket

import pytest

from stop.sandbox import jail
from tests.sandbox_helpers import ROOT, call, outputs, reply, sandbox_uid

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
