"""A small OpenAI-compatible chat server on loopback, for testing the judge end to end.

It answers POST /v1/chat/completions by a known rule (Accept iff the user message holds
MARKER), and can inject faults: HTTP errors, a stall longer than the client's timeout, a
server that ignores `response_format` or one that refuses it. Bound to 127.0.0.1 on a free
port; it stops when its `with` block ends, and on its own after `lifetime_s` at the latest.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MARKER = "PHOTOSYNTHESIS"


class JudgeServer:
    """Start with `with JudgeServer(...) as srv:`; the client base URL is `srv.base_url`.

    faults: consumed one per request, in order: an int status code (500, 429, ...), a
    (status, seconds) pair sent with a Retry-After header,
    "stall" (sleep `stall_s`, longer than the client timeout, then answer) or "echo401"
    (401 quoting the Authorization header back). fail_always: that fault on every request.
    reply: "json" (honour response_format), "text" ("Verdict: Accept" prose),
    "fenced" (JSON in a code fence), "refuse_schema" (HTTP 400 when response_format is sent).
    """

    def __init__(self, faults: list[Any] | None = None, reply: str = "json",
                 stall_s: float = 1.0, lifetime_s: float = 60.0, fail_always: Any = None):
        self.faults = list(faults or [])
        self.reply = reply
        self.stall_s = stall_s
        self.lifetime_s = lifetime_s
        self.fail_always = fail_always
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> "JudgeServer":
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self._timer = threading.Timer(self.lifetime_s, server.shutdown)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timer:
            self._timer.cancel()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    # ---------------------------------------------------------------- behaviour
    def _next_fault(self) -> Any:
        with self.lock:
            if self.fail_always is not None:
                return self.fail_always
            return self.faults.pop(0) if self.faults else None

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        user = " ".join(m.get("content", "") for m in body.get("messages", [])
                        if m.get("role") == "user")
        verdict = "Accept" if MARKER in user else "Reject"
        has_schema = "response_format" in body
        if self.reply == "refuse_schema" and has_schema:
            return 400, {"error": {"message": "response_format json_schema is not supported",
                                   "type": "invalid_request_error", "code": None}}
        if self.reply == "json":
            content = json.dumps({"verdict": verdict})
        elif self.reply == "fenced":
            content = f'Here is my assessment.\n```json\n{{"verdict": "{verdict}"}}\n```'
        else:  # plain prose, the way servers that ignore response_format answer
            content = f"The item is judged as follows.\nVerdict: {verdict}"
        return 200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "judge"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, doc: dict[str, Any],
                      headers: dict[str, str] | None = None) -> None:
                data = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer.lock:
                    outer.requests.append(body)
                    outer.auth_headers.append(self.headers.get("Authorization", ""))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                fault = outer._next_fault()
                if fault == "stall":
                    time.sleep(outer.stall_s)
                elif fault == "echo401":  # like real servers, quote the key back
                    auth = self.headers.get("Authorization", "")
                    self._send(401, {"error": {"message": f"Incorrect API key provided: {auth}",
                                               "type": "invalid_request_error"}})
                    return
                elif isinstance(fault, tuple):  # (status, Retry-After seconds)
                    self._send(fault[0], {"error": {"message": "slow down"}},
                               {"Retry-After": str(fault[1])})
                    return
                elif isinstance(fault, int):
                    self._send(fault, {"error": {"message": f"injected {fault}"}})
                    return
                self._send(*outer.answer(body))

        return Handler
