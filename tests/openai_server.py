"""A real OpenAI-compatible HTTP server on loopback that serves canned replies.

Used by the tests (and runnable by hand: python tests/openai_server.py replies.json) so
that the real `openai` client is exercised over real HTTP.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG = "<<hang>>"  # a reply that makes the server sit on the request


def answer_models(handler: BaseHTTPRequestHandler) -> None:
    """GET /v1/models, as OpenAI-compatible servers answer it: stop asks before a run."""
    if not handler.path.rstrip("/").endswith("/models"):
        handler.send_error(404)
        return
    data = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class CannedServer:
    """Replies are served in turn; a rule {"when": text, "replies": [...]} answers the
    requests whose messages contain `text`, its own replies in turn."""

    def __init__(self, replies: list, hang_s: float = 30.0) -> None:
        self.replies = [r for r in replies if isinstance(r, str)]
        self.rules = [
            (r["when"], r["replies"], itertools.count()) for r in replies if isinstance(r, dict)
        ]
        self.requests: list[dict] = []
        self._next = itertools.cycle(range(len(self.replies) or 1))
        self._lock = threading.Lock()
        self.hang = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                answer_models(self)

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(
                        {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                    )
                    reply = server.pick(json.dumps(body.get("messages")))
                if reply == HANG:
                    server.hang.wait(hang_s)
                    return
                content = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "canned"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 50,
                        "completion_tokens": len(reply.split()),
                        "total_tokens": 50 + len(reply.split()),
                    },
                }
                data = json.dumps(content).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def pick(self, text: str) -> str:
        for when, replies, counter in self.rules:
            if json.dumps(when)[1:-1] in text:
                return replies[next(counter) % len(replies)]
        return self.replies[next(self._next)]

    def __enter__(self) -> CannedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hang.set()
        self.httpd.shutdown()
        self.httpd.server_close()


if __name__ == "__main__":
    with CannedServer(json.load(open(sys.argv[1]))) as srv:
        print(srv.url, flush=True)
        threading.Event().wait()
