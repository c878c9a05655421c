"""The smoke test of a fresh deployment: one fixed clinical question, the answer's shape, the latency.
The prompt is a textbook question, not patient text; the answer is never logged, only its length."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

SMOKE_PROMPT = (
    "You are a clinical assistant. In one sentence: what is the first-line antibiotic treatment for "
    "uncomplicated community-acquired pneumonia in a previously healthy adult outpatient?"
)
MAX_NEW_TOKENS = 64


class SmokeTestFailed(RuntimeError):
    """The endpoint answered, but not the way the TGI container answers (or not at all)."""


def request_body() -> bytes:
    """TGI's SageMaker request: greedy decoding, so the same deployment answers the same way."""
    payload = {"inputs": SMOKE_PROMPT, "parameters": {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}}
    return json.dumps(payload).encode()


def generated_text(endpoint_name: str, body: bytes) -> str:
    """TGI answers `[{"generated_text": "..."}]`; anything else is a broken deployment."""
    expected = 'a JSON list like [{"generated_text": "<non-empty text>"}]'
    try:
        answer = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SmokeTestFailed(
            f"smoke test of {endpoint_name}: the answer is not JSON ({len(body)} bytes); expected {expected}"
        ) from None
    if isinstance(answer, dict):  # TGI's own /generate shape; accepted, it is the same contract
        answer = [answer]
    if not isinstance(answer, list) or not answer or not isinstance(answer[0], dict):
        raise SmokeTestFailed(f"smoke test of {endpoint_name}: got a JSON {type(answer).__name__}; expected {expected}")
    text = answer[0].get("generated_text")
    if not isinstance(text, str) or not text.strip():
        keys = sorted(answer[0])
        raise SmokeTestFailed(
            f"smoke test of {endpoint_name}: no non-empty 'generated_text' (keys: {keys}); expected {expected}"
        )
    return text


def run(runtime: Any, endpoint_name: str) -> dict[str, Any]:
    """Invoke once through sagemaker-runtime; the latency is the whole round trip, as serving sees it."""
    from botocore.exceptions import ClientError

    started = time.perf_counter()
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name, ContentType="application/json", Accept="application/json", Body=request_body()
        )
        body = response["Body"].read()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise SmokeTestFailed(
            f"smoke test of {endpoint_name}: invoke failed: {error.get('Code')}: {error.get('Message')}"
        ) from exc
    latency = time.perf_counter() - started
    text = generated_text(endpoint_name, body)
    log.info("smoke test of %s: %d characters in %.3f s", endpoint_name, len(text), latency)
    return {
        "latency_seconds": latency,
        "answer_chars": len(text),
        "invoked_variant": response.get("InvokedProductionVariant"),
    }
