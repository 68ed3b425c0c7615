"""A loopback OpenAI-compatible server with a set, long-tailed latency, for `stop bench
pipeline`: every request sleeps the latency its number draws from a schedule, and the
server records what it served (each request's latency, when it arrived and when its reply
went out) and how many requests it held at once.

    with LatencyServer(LatencySchedule(base_s=0.5, long_s=2.5, every=8), reply) as server:
        ...  # point the openai backend at server.url
    server.served, server.max_in_flight

It answers GET .../models (stop checks it before a run) and POST .../chat/completions;
`reply(number, body)` writes each completion's text. A real HTTP server, so that the real
openai client, its connection pool and its timeouts are what the benchmark measures.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

MODEL = "latency-bench"  # the one model the server lists
_MAX_BODY = 4 << 20  # bytes of a request body read; stop's prompts are far smaller

Reply = Callable[[int, dict[str, Any]], str]  # (request number from 1, request body) -> text


class LatencySchedule(BaseModel):
    """Every `every`-th request (counted from 1, in the order they arrive) takes `long_s`,
    the others `base_s`: a tail like a server's slow requests, but set, so that the ideal
    wall time is known."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_s: float = Field(ge=0)
    long_s: float = Field(ge=0)
    every: int = Field(ge=1)
    phase: int = Field(default=0, ge=0)  # the long ones are phase, phase + every, ... (0: every-th)

    def latency(self, number: int) -> float:
        return self.long_s if (number - self.phase) % self.every == 0 else self.base_s


class Served(BaseModel):
    """One completion the server answered; times are time.monotonic() seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int  # from 1, in order of arrival
    latency_s: float  # what the schedule made it sleep
    started: float  # the request was read
    ended: float  # its reply was written


class LatencyServer:
    def __init__(self, schedule: LatencySchedule, reply: Reply) -> None:
        self.schedule = schedule
        self._reply = reply
        self._lock = threading.Lock()
        self._served: list[Served] = []
        self._arrived = 0
        self._in_flight = 0
        self.max_in_flight = 0
        # Set on exit: a request still sleeping ends at once rather than holding a thread.
        self._closing = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="latency-server", daemon=True
        )

    @property
    def served(self) -> list[Served]:
        """The completions answered so far, in order of arrival."""
        with self._lock:
            return sorted(self._served, key=lambda s: s.number)

    def __enter__(self) -> LatencyServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5.0)

    def _begin(self) -> int:
        with self._lock:
            self._arrived += 1
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self._arrived

    def _end(self, record: Served | None) -> None:
        with self._lock:
            self._in_flight -= 1
            if record is not None:
                self._served.append(record)

    def _complete(self, body: dict[str, Any]) -> bytes:
        """Sleep the scheduled latency and write the completion's JSON. The request counts
        as served once its JSON is ready: the write after it takes microseconds on
        loopback."""
        started = time.monotonic()
        number = self._begin()
        latency = self.schedule.latency(number)
        record = None
        try:
            text = self._reply(number, body)
            self._closing.wait(latency)
            prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
            data = {
                "id": f"chatcmpl-bench-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", MODEL),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                # Rough counts (4 characters a token), enough for stop's token budgets.
                "usage": {
                    "prompt_tokens": prompt_chars // 4,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": prompt_chars // 4 + len(text) // 4,
                },
            }
            record = Served(
                number=number, latency_s=latency, started=started, ended=time.monotonic()
            )
            return json.dumps(data).encode()
        finally:
            self._end(record)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # a line per request would bury -v's own lines

            def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("latency server: " + format, *args)

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if not self.path.rstrip("/").endswith("/models"):
                    self.send_error(404)
                    return
                models = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
                self._send(200, json.dumps(models).encode())

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self.send_error(404)
                    return
                length = self.headers.get("Content-Length", "")
                if not length.isdigit() or int(length) > _MAX_BODY:
                    self.send_error(411 if not length.isdigit() else 413)
                    return
                try:
                    body = json.loads(self.rfile.read(int(length)))
                except ValueError:
                    self.send_error(400, "the body is not JSON")
                    return
                if not isinstance(body, dict):
                    self.send_error(400, "the body is not a JSON object")
                    return
                try:
                    data = server._complete(body)
                except Exception:  # noqa: BLE001 - a reply function's bug is the client's 500
                    log.exception("latency server: the reply failed")
                    self.send_error(500)
                    return
                self._send(200, data)

        return Handler
