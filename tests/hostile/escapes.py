"""Hostile cases that try to get out of the sandbox: hunting for secrets, changing files
outside it, leaving files and IPC objects behind, and the network. Part of the corpus
(tests/hostile/corpus.py).
"""

from __future__ import annotations

from tests.hostile.case import Case, candidate, improver
from tests.hostile.programs import FAST_FIB, RAW_CONNECT, UNGUARD

CANDIDATES: list[Case] = [
    # --- secrets -------------------------------------------------------------------
    candidate(
        "hunt_for_secrets",  # returns whatever it finds, which would be a wrong answer
        FAST_FIB
        + """
import os


def _hunt():
    found = [v for v in os.environ.values() if "canary" in v]
    paths = ["@SECRET_FILE@", "/root/.config", "/root/.bashrc"]
    paths += [f"/proc/{p}/environ" for p in os.listdir("/proc") if p.isdigit()]
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        for token in (b"sk-canary", b"tok-canary"):
            at = data.find(token)
            if at >= 0:
                found.append(data[at : at + 64].decode(errors="replace"))
    return found


def fib(n):
    return _hunt() or _fib(n)
""",
        "ok",
    ),
    candidate(
        "read_the_secret_file",
        """
        def fib(n):
            with open("@SECRET_FILE@") as f:
                return f.read()
        """,
        "crash",
        r"^line 2: FileNotFoundError: \[Errno 2\] No such file or directory",  # not in view
    ),
    candidate(
        "read_root_config",
        """
        import os


        def fib(n):
            return os.listdir("/root/.config")
        """,
        "crash",
        r"^line 5: FileNotFoundError: \[Errno 2\] No such file or directory: '/root/.config'$",
    ),
    candidate(
        "print_the_environment",
        FAST_FIB
        + """
import os
import sys


def fib(n):
    print(dict(os.environ))
    print(dict(os.environ), file=sys.stderr)
    return _fib(n)
""",
        "ok",
    ),
    # --- the file system outside the sandbox ---------------------------------------
    candidate(
        "write_outside_unguarded",  # returns the paths it could write: a wrong answer
        UNGUARD
        + FAST_FIB
        + """
import os

_PATHS = [
    "/stop-hostile-probe", "/etc/stop-hostile-probe", "/root/stop-hostile-probe",
    "/usr/stop-hostile-probe", "@HOST_CANARY@", "@HOST_DIR@/new-file", "@TMP_CANARY@",
    os.path.join(os.path.dirname(_sys.modules["stop.sandbox.jobs"].__file__), "pwned.py"),
]


def fib(n):
    written = []
    for path in _PATHS:
        try:
            # Existing files must be the host's: a new one in /tmp is the jail's own.
            with open(path, "r+" if "canary" in path else "a") as f:
                f.write("pwned")
            written.append(path)
        except OSError:
            pass
    return written or _fib(n)
""",
        "ok",
    ),
    candidate(
        "write_etc",
        """
        def fib(n):
            with open("/etc/stop-hostile-probe", "w") as f:
                f.write("pwned")
            return n
        """,
        "crash",
        r"^line 2: PermissionError: ",
    ),
    candidate(
        "delete_a_root_owned_canary",
        """
        import os


        def fib(n):
            os.remove("@TMP_CANARY@")
            return n
        """,
        "crash",
        r"^line 5: FileNotFoundError: ",  # the jail's /tmp is its own: no canary there
    ),
    candidate(
        "tamper_with_canaries_unguarded",  # every way to change them; returns what worked
        UNGUARD
        + FAST_FIB
        + """
import os


def _attempts(path):
    yield "remove", lambda: os.remove(path)
    yield "rename", lambda: os.rename(path, path + ".moved")
    yield "chmod", lambda: os.chmod(path, 0o777)
    yield "utime", lambda: os.utime(path, (0, 0))
    yield "truncate", lambda: os.truncate(path, 0)
    yield "open r+", lambda: open(path, "r+").write("x")
    yield "link", lambda: os.link(path, "linked")


def fib(n):
    worked = []
    for path in ("@TMP_CANARY@", "@HOST_CANARY@"):
        for what, attempt in _attempts(path):
            try:
                attempt()
                worked.append(what)
            except OSError:
                pass
    return worked or _fib(n)
""",
        "ok",
    ),
    # Files left in world-writable places the host does not clean.
    candidate(
        "leave_a_file_in_run_lock",
        UNGUARD
        + FAST_FIB
        + """
import os


def fib(n):
    try:
        os.symlink("/nowhere", "/run/lock/stop-hostile-left-behind-@TAG@")
    except OSError:
        pass
    return _fib(n)
""",
        "ok",
        needs=("/run/lock",),
    ),
    candidate(
        "leave_a_file_in_a_shared_subdirectory",
        UNGUARD
        + FAST_FIB
        + """
import os


def fib(n):
    try:
        os.symlink("/nowhere", "@SHARED_DIR@/left-behind")
    except OSError:
        pass
    return _fib(n)
""",
        "ok",
    ),
    candidate(
        "sysv_shared_memory_outlives_the_sandbox",
        UNGUARD
        + FAST_FIB
        + """
import ctypes


def fib(n):
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except PermissionError:
        return _fib(n)
    libc.shmget(0, 1 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600: 1 MiB
    libc.msgget(0, 0o1600)
    libc.semget(0, 1, 0o1600)
    return _fib(n)
""",
        "ok",
    ),
    # --- the network ---------------------------------------------------------------
    candidate(
        "socket_to_loopback",
        """
        import socket


        def fib(n):
            socket.create_connection(("127.0.0.1", @PORT@), timeout=1).sendall(b"leak")
            return n
        """,
        "crash",
        r"^line 5: PermissionError: blocked by the stop sandbox: open a network connection$",
    ),
    candidate(
        "raw_socket_to_loopback_unguarded",
        UNGUARD
        + FAST_FIB
        + RAW_CONNECT
        + """

def fib(n):
    how = _connect("127.0.0.1", @PORT@)
    return how if how == "connected" else _fib(n)
""",
        "ok",
    ),
    candidate(
        "raw_socket_to_the_outside_unguarded",
        UNGUARD
        + FAST_FIB
        + RAW_CONNECT
        + """

def fib(n):
    how = [_connect("1.1.1.1", 443), _connect("8.8.8.8", 53)]
    return how if "connected" in how else _fib(n)
""",
        "ok",
    ),
]

IMPROVERS: list[Case] = [
    # --- secrets, the file system, the network ----------------------------------------
    improver(
        "hunt_for_secrets",  # hands back what it finds, which would land in the run record
        """
        import os

        def improve_algorithm(initial_solution, utility, language_model):
            found = [v for v in os.environ.values() if "canary" in v]
            host = os.getppid()
            paths = ["@SECRET_FILE@", f"/proc/{host}/environ", f"/proc/{host}/mem",
                     "/proc/self/environ", "/root/.config", "/root/.bash_history"]
            for path in paths:
                try:
                    with open(path, "rb") as f:
                        data = f.read(1 << 20)
                except OSError:
                    continue
                for token in (b"sk-canary", b"tok-canary"):
                    at = data.find(token)
                    if at >= 0:
                        found.append(data[at : at + 64].decode(errors="replace"))
            return initial_solution + "".join(f"# {x}\\n" for x in found)
        """,
        "ok",
        returns_initial=True,
    ),
    improver(
        "run_a_shell_unguarded",
        UNGUARD
        + """
import os


def improve_algorithm(initial_solution, utility, language_model):
    os.system("env > env.txt; echo pwned > /tmp/stop-hostile-shell-$$;"
              " echo pwned > /etc/stop-hostile-probe")
    with open("env.txt") as f:
        env = f.read()
    leaked = [line for line in env.splitlines() if "canary" in line]
    return initial_solution + "".join(f"# {x}\\n" for x in leaked)
""",
        "ok",
        returns_initial=True,
    ),
    improver(
        "network_unguarded",
        UNGUARD
        + RAW_CONNECT
        + """

def improve_algorithm(initial_solution, utility, language_model):
    how = [_connect("127.0.0.1", @PORT@), _connect("1.1.1.1", 443)]
    if "connected" not in how:
        return initial_solution
    return initial_solution + f"# {how}\\n"
""",
        "ok",
        returns_initial=True,
    ),
    improver(
        "write_and_delete_outside_unguarded",
        UNGUARD
        + """
import os

_FIB = os.path.join(os.path.dirname(_sys.modules["stop"].__file__), "..", "examples", "fib.py")
_WRITES = [
    "/stop-hostile-probe", "/etc/stop-hostile-probe", "/root/stop-hostile-probe",
    "@HOST_CANARY@", "@TMP_CANARY@", "@HOST_DIR@/new-file", "@RUNS_DIR@/new-file",
    "@RUNS_DIR@/.cache/responses.sqlite3", _FIB,
    os.path.join(os.path.dirname(_sys.modules["stop"].__file__), "pwned.py"),
]
_DELETES = ["@TMP_CANARY@", "@HOST_CANARY@", "@RUNS_DIR@/.cache/responses.sqlite3", _FIB]


def improve_algorithm(initial_solution, utility, language_model):
    worked = []
    for path in _WRITES:
        try:
            # Existing files must be the host's: a new one in /tmp is the jail's own.
            with open(path, "r+" if "canary" in path else "a") as f:
                f.write("pwned")
            worked.append(path)
        except OSError:
            pass
    for path in _DELETES:
        try:
            os.remove(path)
            worked.append(path)
        except OSError:
            pass
    return initial_solution + "".join(f"# {x}\\n" for x in worked)
""",
        "ok",
        returns_initial=True,
    ),
    improver(
        "lock_the_response_cache_unguarded",  # a lock held while asking the model: see bug
        UNGUARD
        + """
import ctypes
import os


class _Flock(ctypes.Structure):
    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short),
                ("l_start", ctypes.c_longlong), ("l_len", ctypes.c_longlong),
                ("l_pid", ctypes.c_int)]


def improve_algorithm(initial_solution, utility, language_model):
    got = []
    try:
        fd = os.open("@RUNS_DIR@/.cache/responses.sqlite3", os.O_RDONLY)
    except OSError:
        return initial_solution
    got.append(f"read {len(os.read(fd, 1 << 20))} bytes of the response cache")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fcntl(fd, 6, ctypes.byref(_Flock(0, 0, 0, 0, 0))) == 0:  # F_SETLK, F_RDLCK
        got.append("holds a read lock on the response cache")
    return initial_solution + "".join(f"# {x}\\n" for x in got)
""",
        "ok",
        returns_initial=True,
    ),
]
