"""The warm parent of pooled sandbox children (runs in its own process; host: pool.py).

It is started like a fresh sandbox child (`python -I`, scrubbed environment), imports
what sandboxed jobs and utilities need once, then forks one child per request. A forked
child is what `python -I -c ... child.main()` would be after its imports: it gets a new
session, its own stdout/stderr files, working directory and environment from the host,
and then runs stop/sandbox/child.serve, which builds its jail and confines it exactly
as a fresh child is confined (stop/sandbox/jail.py) before any job code runs.

The zygote holds no secrets (it never sees a job's payload: that travels over the
child's own pipes) and runs no untrusted code. Messages on its socket are JSON, one per
SOCK_SEQPACKET packet; a spawn request carries the child's four file descriptors.
"""

from __future__ import annotations

import json
import os
import sys

from stop.sandbox import child

# Loaded once here, so that no pooled child pays for them: what a fresh child loads (its
# common modules and the sandbox's own) and what the downstream tasks preload (task.py).
SANDBOX = ("stop.sandbox.jobs", "stop.sandbox.guard", "stop.sandbox.confine", "stop.sandbox.jail")
NUMPY = ("numpy", "numpy.random", "numpy.linalg")
MAX_MESSAGE = 1 << 16


def main() -> None:
    # A child must see the modules a fresh child would have, no more: a module already
    # loaded imports without the audit event the guard watches, and without the files an
    # unprivileged user cannot read. So the zygote notes what its children may keep, and
    # loads its own modules (socket) after that. Jobs that preload numpy get a zygote of
    # their own ("numpy" argument); the others fork from a smaller one, which is faster.
    child.preload((*child.COMMON, *SANDBOX))
    if sys.argv[2] == "numpy":
        child.preload(NUMPY)
    modules = frozenset(sys.modules) - {__name__}
    import select
    import signal
    import socket

    sock = socket.socket(fileno=int(sys.argv[1]))
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wakeup fd fires
    sock.send(json.dumps({"ready": os.getpid()}).encode())
    watched: list[socket.socket | int] = [sock, wake_r]
    while True:
        readable, _, _ = select.select(watched, [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            _report_exits(sock)
        if sock in readable:
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 4)
            except OSError:
                data, fds = b"", []
            if not data:  # the host is gone; our children die with us (PDEATHSIG)
                os._exit(0)
            request = json.loads(data)
            request["setup"]["host_pid"] = os.getpid()  # the child dies with us
            try:
                pid = os.fork()
            except OSError as exc:
                # EAGAIN or ENOMEM on a loaded machine: this request fails (the host
                # tries again in a fresh sandbox), the warm parent lives on.
                for fd in fds:
                    os.close(fd)
                sock.send(json.dumps({"id": request["id"], "error": str(exc)}).encode())
                continue
            if pid == 0:
                _become_child(request, fds, sock, (wake_r, wake_w), modules)
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"id": request["id"], "pid": pid}).encode())


def _report_exits(sock) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        sock.send(json.dumps({"exited": pid, "returncode": code}).encode())


def _become_child(
    request: dict, fds: list[int], sock, wake: tuple, modules: frozenset[str]
) -> None:
    """In the forked child: take the host's descriptors and settings, forget the modules
    a fresh child would not have, then serve the job."""
    import signal

    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in wake:
            os.close(fd)
        os.setsid()  # its own process group, which the host kills at the end
        rfd, wfd, out, err = fds
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        for fd in (devnull, out, err):
            os.close(fd)
        sys.argv = ["-c", str(rfd), str(wfd), json.dumps(request["setup"])]  # as a fresh child's
        os.environ.clear()
        os.environ.update(request["env"])
        for name in [name for name in sys.modules if name not in modules]:
            del sys.modules[name]
        child.serve(rfd, wfd, request["setup"])
        code = 0
    except BaseException:  # noqa: BLE001 - as a fresh interpreter would: traceback, status 1
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
