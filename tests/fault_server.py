"""An OpenAI-compatible server on loopback that misbehaves on purpose.

Each request is answered by a *fault plan*: a list of actions, one per HTTP attempt, the
last repeated. The plan is picked by the request's `seed` (which the openai backend sets
to `seed * 1000 + sample`: one entry per sample of a prompt) or, first, by a text key
found in the user message. Attempts are counted per (user message, seed), so the SDK's
retries show here as further attempts of one sample.

An action is a dict; every key is optional:
    status         HTTP status (default 200); 4xx/5xx get an OpenAI-style error body
    sleep          seconds to sit on the request before answering (a slow server)
    drip           seconds between each of 10 pieces of the body (a server that trickles)
    raw            the exact body to send, instead of a chat completion (malformed JSON)
    reply          the assistant's text (default: the server's default reply)
    finish_reason  default "stop"; "length" for truncated content
    choices        the `choices` list to send instead (e.g. [] for empty choices)
    usage          the `usage` object to send instead (None: leave it out)
    headers        extra response headers (e.g. retry-after-ms)
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.openai_server import answer_models

OK: dict[str, Any] = {}
E429 = {"status": 429, "headers": {"retry-after-ms": "20"}}
E500 = {"status": 500}
SLOW = {"sleep": 30.0}  # past any timeout a test uses; the server wakes at shutdown
TRICKLE = {"drip": 0.4}  # each read is quick, the whole body takes 4 s
MALFORMED = {"raw": '{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"rol'}
NOT_AN_OBJECT = {"raw": '["a", "list"]'}
EMPTY_CHOICES = {"choices": []}
NO_CONTENT = {"choices": [{"index": 0, "message": {"role": "assistant"}, "finish_reason": "stop"}]}
MEGABYTE = 1 << 20


def truncated(text: str) -> dict[str, Any]:
    """Content cut off by the token limit, as a server reports it."""
    return {"reply": text, "finish_reason": "length"}


def huge(n_chars: int = MEGABYTE) -> dict[str, Any]:
    """A reply of `n_chars` characters: a code block padded with a long comment."""
    head = "```python\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n# "
    return {"reply": head + "x" * (n_chars - len(head) - 4) + "\n```"}


class FaultServer:
    def __init__(
        self,
        plan: dict[int | str, list[dict[str, Any]]],
        default_reply: str,
        default: list | None = None,
    ) -> None:
        self.plan = plan
        self.default = default or [OK]
        self.default_reply = default_reply
        self.requests: list[dict[str, Any]] = []  # seed, attempt, status, time
        self._attempts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                answer_models(self)

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                action = server._next(body)
                if action.get("sleep"):
                    server.stopping.wait(action["sleep"])
                status, data = server._render(body, action)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in action.get("headers", {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    if action.get("drip"):
                        step = len(data) // 10 + 1
                        for i in range(0, len(data), step):
                            self.wfile.write(data[i : i + step])
                            self.wfile.flush()
                            if server.stopping.wait(action["drip"]):
                                return
                    else:
                        self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timed out) and closed the connection

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _next(self, body: dict[str, Any]) -> dict[str, Any]:
        seed = int(body.get("seed", -1))
        messages = body.get("messages") or [{}]
        user = str(messages[-1].get("content", ""))
        with self._lock:
            attempt = self._attempts.get((user, seed), 0)
            self._attempts[(user, seed)] = attempt + 1
            by_text = [a for k, a in self.plan.items() if isinstance(k, str) and k in user]
            actions = by_text[0] if by_text else self.plan.get(seed, self.default)
            action = actions[min(attempt, len(actions) - 1)]
            self.requests.append(
                {
                    "seed": seed,
                    "user": user,
                    "attempt": attempt,
                    "status": action.get("status", 200),
                    "time": time.monotonic(),
                }
            )
        return action

    def attempts(self, seed: int) -> int:
        """HTTP requests for sample `seed`, over all messages."""
        with self._lock:
            return sum(n for (_, s), n in self._attempts.items() if s == seed)

    def _render(self, body: dict[str, Any], action: dict[str, Any]) -> tuple[int, bytes]:
        status = action.get("status", 200)
        if status >= 400:
            error = {"message": f"injected fault {status}", "type": "server_error", "code": None}
            return status, json.dumps({"error": error}).encode()
        if "raw" in action:
            return status, action["raw"].encode()
        reply = action.get("reply", self.default_reply)
        choices = action.get(
            "choices",
            [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": action.get("finish_reason", "stop"),
                }
            ],
        )
        usage = action.get(
            "usage",
            {
                "prompt_tokens": 50,
                "completion_tokens": len(reply.split()),
                "total_tokens": 50 + len(reply.split()),
            },
        )
        content: dict[str, Any] = {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "faulty"),
            "choices": choices,
        }
        if usage is not None:
            content["usage"] = usage
        return status, json.dumps(content).encode()

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
