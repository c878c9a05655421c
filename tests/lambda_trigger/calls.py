"""Invoke the handler as Lambda does, and read back the JSON lines it logged."""

from __future__ import annotations

import json
from typing import Any

import handler
import pytest

from tests.lambda_trigger.sample_events import LambdaContext


def invoke(event: dict[str, Any], remaining_s: float = 30) -> dict[str, Any]:
    return handler.lambda_handler(event, LambdaContext(remaining_s))


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_trigger"]
