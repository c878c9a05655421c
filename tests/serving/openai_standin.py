"""A stand-in for a paid service: an OpenAI-compatible chat-completions server (POST /v1/chat/completions),
speaking the real protocol, for the tests of the openai generator. It records what it was asked.

Behaviour is steered by words in the patient description, as a test needs it:
'STANDIN-SLOW' answers after `slow_s` seconds, 'STANDIN-FAIL' answers HTTP 500.
"""

from __future__ import annotations

import re
import time
from typing import Any

from tests.http_server import JsonHandler, LocalServer

USAGE = {"prompt_tokens": 321, "completion_tokens": 17, "total_tokens": 338}  # what every answer reports


class ChatCompletionsStandIn(LocalServer):
    def __init__(self, api_key: str = "sk-standin", slow_s: float = 5.0) -> None:
        self.api_key = api_key
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []
        self.answers: list[str] = []  # the text of each completion it answered
        super().__init__(_Handler, standin=self)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


class _Handler(JsonHandler):
    standin: ChatCompletionsStandIn

    def do_POST(self) -> None:  # noqa: N802 (http.server calls it so)
        standin = self.standin
        body = self.read_json()
        standin.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path != "/v1/chat/completions":
            self.send_json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
            self.send_json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_api_key"}})
            return
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if "STANDIN-FAIL" in user:
            self.send_json(500, {"error": {"message": "The server had an error", "type": "server_error"}})
            return
        if "STANDIN-SLOW" in user:
            time.sleep(standin.slow_s)
        answer = completion(body["model"], user)
        standin.answers.append(answer["choices"][0]["message"]["content"])
        self.send_json(200, answer)


def completion(model: str, user: str) -> dict[str, Any]:
    """The chat completion a model following the prompt's instructions would give: it cites the cases the
    prompt numbers ([1], the second and the last), and reports the fixed USAGE."""
    cases = re.findall(r"^\[(\d+)\] ", user, flags=re.MULTILINE)
    text = "The similar cases share the presentation [1]" + (
        f" and were treated alike [{cases[1]}], [{len(cases)}]." if len(cases) > 1 else "."
    )
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
