"""A minimal OpenAI-compatible chat-completions server on 127.0.0.1 for tests (no network).

openai 3.x talks through httpx2, which httpx mocking libraries do not intercept, so the real SDK
is tested against a real local socket. `reply(model, messages)` decides each answer; raising in
it returns HTTP 500 (the SDK then retries and finally raises).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[str, list[dict[str, Any]]], str]


@contextmanager
def fake_openai_server(reply: Reply) -> Iterator[dict[str, Any]]:
    """Yields ``{"base_url": ..., "requests": [...]}``; every request body and auth header is recorded."""
    state: dict[str, Any] = {"requests": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            state["requests"].append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            if not self.path.split("?")[0].endswith("/chat/completions"):
                self._send(404, {"error": {"message": "not found"}})
                return
            try:
                text = reply(body.get("model", ""), body.get("messages", []))
            except Exception as exc:  # noqa: BLE001
                self._send(500, {"error": {"message": str(exc), "type": "server_error"}})
                return
            self._send(
                200,
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", ""),
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": max(1, len(text) // 2), "total_tokens": 10 + max(1, len(text) // 2)},
                },
            )

        def _send(self, code: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        state["base_url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
        yield state
    finally:
        server.shutdown()
        server.server_close()
