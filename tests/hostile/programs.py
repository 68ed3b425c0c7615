"""Program fragments the parts of the hostile corpus (tests/hostile/corpus.py) share."""

from __future__ import annotations

from tests import replies
from tests.hostile.case import src

# Tries to tear the guard down from inside. The guard works from copies, so this changes
# nothing; the "*_unguarded" cases reach the walls beneath it because test_hostile runs
# them with the guard left out (run_job(guard=False)).
UNGUARD = src(
    """
    import sys as _sys
    _guard = _sys.modules.get("stop.sandbox.guard")
    for _table in ("_BLOCKED", "_FILE_CHANGES"):
        try:
            getattr(_guard, _table).clear()
        except Exception:
            pass
    try:
        _guard._inside = lambda *args: True
    except Exception:
        pass
    """
)

FAST_FIB = src(
    """
    def _fib(n):
        a, b = 0, 1
        for _ in range(n):
            a, b = b, a + b
        return a
    """
)

# A socket without the socket module (it cannot be imported once privileges are dropped).
RAW_CONNECT = src(
    """
    import ctypes, os, struct

    def _connect(host, port):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except PermissionError:
            return "blocked"
        fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM
        if fd < 0:
            return "no socket"
        address = (struct.pack("=H", 2) + struct.pack("!H", port)
                   + bytes(int(x) for x in host.split(".")) + bytes(8))
        buffer = ctypes.create_string_buffer(address, len(address))
        rc = libc.connect(fd, buffer, len(address))
        os.close(fd)
        return "connected" if rc == 0 else "refused"
    """
)

MEMO_REPLY = replies.MEMO

# The original, naive and exponential: every forgery (forgery.py) wraps it, so none is faster.
NAIVE_FIB = src(
    """
    def fib(n):
        if n < 2:
            return n
        return fib(n - 1) + fib(n - 2)
    """
)

# Programs an improver hands back: a wrong answer, and one that never returns.
WRONG_FIB = "def fib(n):\n    return n\n"
HANGING_FIB = "def fib(n):\n    while True:\n        pass\n"
