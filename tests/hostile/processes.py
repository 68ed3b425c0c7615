"""Hostile cases that reach for other processes: signals to the process group, the parent
and the host, and daemons meant to outlive the sandbox. Part of the corpus
(tests/hostile/corpus.py).
"""

from __future__ import annotations

from tests.hostile.case import Case, candidate, improver
from tests.hostile.programs import UNGUARD

CANDIDATES: list[Case] = [
    # --- other processes -----------------------------------------------------------
    candidate(
        "kill_own_process_group",
        """
        import os


        def fib(n):
            os.killpg(os.getpgid(0), 9)
            return n
        """,
        "crash",
        r"^killed by SIGKILL: killed \(memory or process limit, or from outside\)$"
        r"|blocked by the stop sandbox: signal a process group",
    ),
    candidate(
        "kill_parent",
        """
        import os


        def fib(n):
            os.kill(os.getppid(), 9)
            return n
        """,
        "crash",
        r"^killed by SIGKILL: killed \(memory or process limit, or from outside\)$"
        r"|blocked by the stop sandbox: signal a process",
    ),
    candidate(
        # The real wall: the jail's process group is its init's, pid 1 inside, and
        # killpg(1) is kill(-1), which finds no process it may signal but the init, which
        # ignores signals from inside its namespace.
        "kill_own_process_group_unguarded",
        UNGUARD
        + """
import os


def fib(n):
    os.killpg(os.getpgid(0), 9)
    return n
""",
        "crash",
        r"^line 17: ProcessLookupError: \[Errno 3\] No such process$",
    ),
    candidate(
        "kill_parent_unguarded",  # the parent is the jail's init: the signal is dropped
        UNGUARD
        + """
import os


def fib(n):
    os.kill(os.getppid(), 9)
    return n
""",
        "wrong_answer",
        r"^for args \[22\]: expected 17711, got 22",
    ),
    candidate(
        "kill_every_process_it_may",
        """
        import os


        def fib(n):
            os.kill(-1, 9)
            return n
        """,
        "crash",
        r"^killed by SIGKILL: killed \(memory or process limit, or from outside\)$"
        r"|blocked by the stop sandbox: signal a process",
    ),
    candidate(
        # The host is not in the jail's PID namespace: the init's parent reads as 0, and
        # kill(0) signals the worker's own process group.
        "kill_the_host_unguarded",
        UNGUARD
        + """
import os
import signal


def fib(n):
    with open(f"/proc/{os.getppid()}/stat") as f:
        host = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(host, signal.SIGKILL)
    return n
""",
        "crash",
        r"^killed by signal 9$",
    ),
]

IMPROVERS: list[Case] = [
    # --- other processes --------------------------------------------------------------
    improver(
        "kill_own_process_group",
        """
        import os

        def improve_algorithm(initial_solution, utility, language_model):
            os.killpg(os.getpgid(0), 9)
            return initial_solution
        """,
        "crash",
        r"^killed by SIGKILL: killed \(memory or process limit, or from outside\)$"
        r"|blocked by the stop sandbox: signal a process group",
    ),
    improver(
        # The improver runs in the jail's init (pid 1 inside, its own process group), which
        # no signal from inside can kill; killpg(1) is kill(-1), and finds nothing else.
        "kill_own_process_group_unguarded",
        UNGUARD
        + """
import os


def improve_algorithm(initial_solution, utility, language_model):
    os.killpg(os.getpgid(0), 9)
    return initial_solution
""",
        "crash",
        r"^line 17: ProcessLookupError: \[Errno 3\] No such process$",
    ),
    improver(
        # The host is outside the jail's PID namespace: its parent reads as 0, and
        # kill(0) reaches only the init's own process group, which it ignores.
        "kill_the_host_unguarded",
        UNGUARD
        + """
import os
import signal


def improve_algorithm(initial_solution, utility, language_model):
    os.kill(os.getppid(), signal.SIGKILL)
    return initial_solution
""",
        "ok",
        returns_initial=True,
    ),
    improver(
        "fork_daemons_unguarded",
        UNGUARD
        + """
import os
import time


def improve_algorithm(initial_solution, utility, language_model):
    for _ in range(100):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            os.setsid()
            while True:
                time.sleep(1)
    return initial_solution
""",
        "ok",
        returns_initial=True,
    ),
    improver(
        "undumpable_daemon_unguarded",  # /proc/<pid> of a non-dumpable process may be root's
        UNGUARD
        + """
import ctypes
import os
import time


def improve_algorithm(initial_solution, utility, language_model):
    libc = ctypes.CDLL(None)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
            while True:
                time.sleep(1)
        os._exit(0)
    time.sleep(0.3)
    return initial_solution
""",
        "ok",
        returns_initial=True,
    ),
]
