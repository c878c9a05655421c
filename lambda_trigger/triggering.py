"""Triggering: one DAG run per object of an invocation, retried with backoff while the invocation has
time, and one JSON log line per decision."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from answers import AuthError, Backend, Retryable, TriggerError, is_retryable, json_object, not_from_airflow, short
from config import Config
from events import Item, S3Object, parse_event
from objects import run_id_for, skip_reason

log = logging.getLogger("lambda_trigger")
log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
if not logging.getLogger().handlers:  # outside Lambda (which installs its own handler)
    logging.basicConfig(format="%(message)s")

MIN_REQUEST_S = 0.5  # no further attempt when less than this would be left for it


def emit(level: int, outcome: str, **fields: Any) -> None:
    """One JSON line per decision: object, run id, outcome. Never file contents."""
    log.log(level, json.dumps({"outcome": outcome, **fields}, default=str))


@dataclass
class Deadline:
    """The invocation's remaining time (from the Lambda context), less a margin for the answer."""

    remaining_s: Callable[[], float]
    margin_s: float

    @classmethod
    def of(cls, context: Any, config: Config) -> Deadline:
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            return cls(lambda: context.get_remaining_time_in_millis() / 1000.0, config.deadline_margin_s)
        end = time.monotonic() + config.max_wait_s
        return cls(lambda: end - time.monotonic(), config.deadline_margin_s)

    def left(self) -> float:
        return self.remaining_s() - self.margin_s


def trigger(obj: S3Object, config: Config, backend: Backend, deadline: Deadline) -> str:
    """Create the run for one object: 'triggered', or 'duplicate' when Airflow already has it.
    Retries connection errors, 429 and 5xx with exponential backoff and full jitter while time is left."""
    run_id = run_id_for(obj)
    attempt = 0
    while True:
        attempt += 1
        timeout_s = min(config.request_timeout_s, max(deadline.left(), MIN_REQUEST_S))
        try:
            answer = backend.trigger(config.dag_id, run_id, obj.conf(), timeout_s)
            if is_retryable(answer.status):
                raise Retryable(f"HTTP {answer.status}: {short(answer.body)}")
        except Retryable as exc:
            delay = random.uniform(0, min(config.backoff_max_s, config.backoff_base_s * 2 ** (attempt - 1)))
            if attempt >= config.max_attempts or deadline.left() - delay < MIN_REQUEST_S:
                raise TriggerError(
                    f"could not trigger DAG {config.dag_id!r} for {obj.uri} (run {run_id}): Airflow unreachable "
                    f"or failing after {attempt} attempts; last error: {exc}"
                ) from exc
            emit(
                logging.WARNING,
                "retry",
                uri=obj.uri,
                run_id=run_id,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=str(exc),
            )
            time.sleep(delay)
            continue
        # A success counts only in Airflow's own words: a proxy's or another site's page triggered nothing.
        if answer.status in (200, 201) and (json_object(answer.body) or {}).get("dag_run_id") == run_id:
            return "triggered"
        if answer.status == 409 and json_object(answer.body) is not None:
            return "duplicate"  # this object's run exists already: a redelivery, and a success
        if answer.status in (200, 201, 409):
            raise TriggerError(
                f"could not trigger DAG {config.dag_id!r} for {obj.uri} (run {run_id}): "
                + not_from_airflow(answer, "Airflow's JSON answer")
            )
        raise TriggerError(
            f"Airflow refused to trigger DAG {config.dag_id!r} for {obj.uri} (run {run_id}): "
            f"HTTP {answer.status}: {short(answer.body)}"
        )


def process(event: Any, config: Config, backend: Backend, deadline: Deadline) -> dict[str, Any]:
    """Trigger every object of the event; the SQS messages that failed go to batchItemFailures."""
    results: dict[str, int] = {"triggered": 0, "duplicate": 0, "skipped": 0, "failed": 0}
    failures: list[tuple[str | None, Exception]] = []  # (SQS message id, error)
    auth_error: AuthError | None = None
    for item in parse_event(event):
        outcome, error = _process_item(item, config, backend, deadline, auth_error)
        results[outcome] += 1
        if isinstance(error, AuthError):
            auth_error = error  # the rest fail at once: no login storm with a wrong password
        if error is not None:
            failures.append((item.message_id, error))
    sqs = _is_sqs(event)
    if sqs and all(message_id for message_id, _ in failures):
        failed_messages = list(dict.fromkeys(message_id for message_id, _ in failures))
        return {**results, "batchItemFailures": [{"itemIdentifier": m} for m in failed_messages]}
    if not failures:
        return results
    errors = [error for _, error in failures]
    if sqs:
        # SQS names a message by its messageId alone: a failed one without it cannot be listed, and left out
        # it would be deleted. Raising makes SQS retry the whole batch (what was triggered comes back as a
        # duplicate); unlike an empty itemIdentifier, it does so even without ReportBatchItemFailures.
        raise TriggerError(
            "a failed SQS message has no messageId to put in batchItemFailures, so the whole batch fails and "
            "SQS retries every message: " + "; ".join(map(str, errors))
        ) from errors[0]
    # A direct (asynchronous) invocation: raising makes Lambda retry it, then send it to the DLQ.
    raise errors[0] if len(errors) == 1 else TriggerError("; ".join(map(str, errors)))


def _process_item(
    item: Item, config: Config, backend: Backend, deadline: Deadline, auth_error: AuthError | None
) -> tuple[str, Exception | None]:
    obj = item.obj
    reason = item.skip or (skip_reason(obj, config) if obj else "no object")
    fields = {"uri": obj.uri if obj else None, "message_id": item.message_id}
    if reason:
        emit(logging.INFO, "skipped", **fields, reason=reason)
        return "skipped", None
    assert obj is not None
    run_id = run_id_for(obj)
    try:
        if auth_error is not None:
            raise auth_error
        outcome = trigger(obj, config, backend, deadline)
    except TriggerError as exc:
        emit(logging.ERROR, "failed", **fields, run_id=run_id, dag_id=config.dag_id, error=str(exc))
        return "failed", exc
    emit(logging.INFO, outcome, **fields, run_id=run_id, dag_id=config.dag_id, size=obj.size)
    return outcome, None


def _is_sqs(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return isinstance(records, list) and any(
        isinstance(r, dict) and (r.get("eventSource") or r.get("EventSource")) == "aws:sqs" for r in records
    )
