"""The host's end of a sandbox's pipes: newline-delimited JSON, every read and write
under the job's deadline (the child's end is stop/sandbox/child.py)."""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any


class Channel:
    """Newline-delimited JSON over two pipes, with a deadline on every read and write."""

    def __init__(self, rfd: int, wfd: int, deadline: float, max_bytes: int) -> None:
        self.rfd, self.wfd, self.deadline, self.max_bytes = rfd, wfd, deadline, max_bytes
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)

    def send(self, message: dict[str, Any]) -> bool:
        data = (json.dumps(message) + "\n").encode()
        while data:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return False
            _, w, _ = select.select([], [self.wfd], [], left)
            if w:
                try:
                    data = data[os.write(self.wfd, data) :]
                except BrokenPipeError:
                    return False
        return True

    def recv(self) -> dict[str, Any] | str:
        """The next message, or "eof", "timeout" or "oversized"."""
        while (end := self._buf.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buf)  # search only new bytes: a huge line stays linear
            left = self.deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            r, _, _ = select.select([self.rfd], [], [], left)
            if not r:
                continue
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                return "eof"
            if len(self._buf) + len(chunk) > self.max_bytes:
                return "oversized"
            self._buf += chunk
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        self._scanned = 0
        try:
            message = json.loads(line)
        except ValueError:
            return "oversized"
        return message if isinstance(message, dict) else "oversized"
