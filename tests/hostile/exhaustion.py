"""Hostile cases that exhaust what the sandbox allows: hangs and runaway loops, processes
and threads, memory, disk and output. Part of the corpus (tests/hostile/corpus.py).
"""

from __future__ import annotations

from tests.hostile.case import Case, candidate, improver
from tests.hostile.programs import FAST_FIB, UNGUARD

CANDIDATES: list[Case] = [
    # --- hangs and runaway loops ---------------------------------------------------
    candidate(
        "infinite_loop",
        """
        def fib(n):
            while True:
                pass
        """,
        "timeout",
        r"^timed out after 2 s; killed$",
    ),
    candidate(
        "busy_loop_ignoring_sigterm",
        """
        import signal

        for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
            signal.signal(_sig, signal.SIG_IGN)


        def fib(n):
            x = 0
            while True:
                x += 1
        """,
        "timeout",
        r"^timed out after 2 s; killed$",
    ),
    candidate(
        "setsid_then_spin",  # leaves the process group the host kills
        """
        import os


        def fib(n):
            os.setsid()
            while True:
                pass
        """,
        "timeout",
        r"^timed out after 2 s; killed$",
    ),
    candidate(
        "sleep_holding_a_lock",
        """
        import threading
        import time

        _lock = threading.Lock()


        def fib(n):
            with _lock:
                time.sleep(60)
            return n
        """,
        "timeout",
        r"^timed out after 2 s; killed$",
    ),
    candidate(
        "c_level_hang_regex_backtracking",
        """
        import re


        def fib(n):
            return 0 if re.match(r"(a+)+$", "a" * 64 + "!") else n
        """,
        "timeout",
        r"^timed out after 2 s; killed$",
    ),
    candidate(
        "c_level_hang_blocking_pipe_read",
        """
        import os


        def fib(n):
            r, w = os.pipe()
            return len(os.read(r, 1))
        """,
        "timeout",
        r"^timed out after 2 s; killed$",
    ),
    # --- processes and threads -----------------------------------------------------
    candidate(
        "fork_bomb",
        """
        import os


        def fib(n):
            while True:
                os.fork()
        """,
        "crash",
        r"BlockingIOError|blocked by the stop sandbox: fork",
    ),
    candidate(
        "fork_bomb_at_import_unguarded",
        UNGUARD
        + """
import os

while True:
    os.fork()


def fib(n):
    return n
""",
        "crash",
        r"^line \d+: BlockingIOError: \[Errno 11\] Resource temporarily unavailable$",
    ),
    candidate(
        "thread_spawn",
        """
        import threading


        def fib(n):
            threading.Thread(target=print).start()
            return n
        """,
        "crash",
        r"RuntimeError: can't start new thread",
    ),
    candidate(
        "spawn_subprocess",
        """
        import subprocess


        def fib(n):
            return int(subprocess.check_output(["echo", str(n)]))
        """,
        "crash",
        r"^line 5: PermissionError: blocked by the stop sandbox: start a subprocess$",
    ),
    candidate(
        "exec_a_shell_unguarded",  # replaces the worker with /bin/sh, which writes to /tmp
        UNGUARD
        + FAST_FIB
        + """
import os


def fib(n):
    os.execv("/bin/sh", ["sh", "-c", "echo $OPENAI_API_KEY > /tmp/stop-hostile-exec-$$"])
    return _fib(n)
""",
        "crash",
        r"^exited before returning$",
    ),
    # --- memory, disk, output ------------------------------------------------------
    candidate(
        "memory_bomb",
        """
        _hog = bytearray(8 << 30)


        def fib(n):
            return n
        """,
        "crash",
        r"^line 1: MemoryError",
    ),
    candidate(
        "memory_creep",
        """
        def fib(n):
            chunks = []
            while True:
                chunks.append(bytes(16 << 20))
        """,
        "crash",
        r"^line 4: MemoryError",
    ),
    candidate(
        "disk_filler_one_huge_file",
        """
        def fib(n):
            with open("huge", "wb") as f:
                for _ in range(64):
                    f.write(b"x" * (1 << 20))
            return n
        """,
        "crash",
        r"OSError: \[Errno 27\] File too large",
    ),
    candidate(
        "disk_filler_many_files_everywhere",  # then answers correctly: scored, then cleaned
        FAST_FIB
        + """
import os

_SIZES = {".": 8 << 20, "/tmp": 1 << 20, "/var/tmp": 1 << 20, "/dev/shm": 1 << 20}


def _fill():
    for folder, size in _SIZES.items():
        for i in range(16):
            path = os.path.join(folder, f"stop-hostile-fill-{i}")
            try:
                if not os.path.exists(path):
                    with open(path, "wb") as f:
                        f.write(b"x" * size)
            except OSError:
                pass


def fib(n):
    _fill()
    return _fib(n)
""",
        "ok",
    ),
    candidate(
        "huge_stdout",
        """
        def fib(n):
            print("x" * (64 << 20))
            return n
        """,
        "crash",
        r"OSError: \[Errno 27\] File too large",
    ),
    candidate(
        "deep_recursion",
        """
        def fib(n):
            return fib(n + 1)
        """,
        "crash",
        r"RecursionError: maximum recursion depth exceeded",
    ),
    candidate(
        "c_stack_overflow",  # recursion through C (map) with the limit lifted
        """
        import sys

        sys.setrecursionlimit(10**7)


        def _down(k):
            return list(map(_down, [k + 1]))


        def fib(n):
            return _down(n)
        """,
        "crash",
        r"^killed by signal 11$",
    ),
    candidate(
        "segfault_via_ctypes",
        """
        import ctypes


        def fib(n):
            return len(ctypes.string_at(0))
        """,
        "crash",
        r"^killed by signal 11$|blocked by the stop sandbox",
    ),
]

IMPROVERS: list[Case] = [
    # --- hangs ------------------------------------------------------------------------
    improver(
        "busy_loop_ignoring_sigterm",
        """
        import signal

        def improve_algorithm(initial_solution, utility, language_model):
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_IGN)
            while True:
                pass
        """,
        "timeout",
        r"^timed out after 4 s; killed$",
    ),
    improver(
        "sleep_holding_a_lock_after_a_model_call",
        """
        import threading, time

        def improve_algorithm(initial_solution, utility, language_model):
            language_model.prompt("x", "y")
            with threading.Lock():
                time.sleep(60)
        """,
        "timeout",
        r"^timed out after 4 s; killed$",
        model_calls=1,
    ),
]
