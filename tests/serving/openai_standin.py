"""A stand-in for a paid service: an OpenAI-compatible chat-completions server (POST /v1/chat/completions),
speaking the real protocol, for the tests of the openai generator. It records what it was asked.

Behaviour is steered by words in the patient description, as a test needs it:
'STANDIN-SLOW' answers after `slow_s` seconds, 'STANDIN-FAIL' answers HTTP 500.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatCompletionsStandIn:
    def __init__(self, api_key: str = "sk-standin", slow_s: float = 5.0) -> None:
        self.api_key = api_key
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ChatCompletionsStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                standin.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                    return
                if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_api_key"}})
                    return
                user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                if "STANDIN-FAIL" in user:
                    self._send(500, {"error": {"message": "The server had an error", "type": "server_error"}})
                    return
                if "STANDIN-SLOW" in user:
                    time.sleep(standin.slow_s)
                # Cite the cases the prompt numbers, the way a model following the instructions would.
                cases = re.findall(r"^\[(\d+)\] ", user, flags=re.MULTILINE)
                text = "The similar cases share the presentation [1]" + (
                    f" and were treated alike [{cases[1]}], [{len(cases)}]." if len(cases) > 1 else "."
                )
                self._send(
                    200,
                    {
                        "id": "chatcmpl-standin",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 321, "completion_tokens": 17, "total_tokens": 338},
                    },
                )

        return Handler
