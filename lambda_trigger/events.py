"""Every object notification in an invocation: S3 events, the same in SQS (or SNS via SQS) messages,
and EventBridge "Object Created" events. A malformed one is skipped with a reason that names the
field, never a value."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None
    event_time: str | None
    sequencer: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def conf(self) -> dict[str, Any]:
        return {
            "source_uri": self.uri,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
            "event_time": self.event_time,
        }


@dataclass
class Item:
    """One object notification, or a reason why the notification names no object to ingest."""

    obj: S3Object | None
    message_id: str | None = None  # the SQS message it came in, for batchItemFailures
    skip: str | None = None


class Malformed(ValueError):
    """A message that can never be triggered, however often it is delivered: it says which field is
    missing or of the wrong type, never a value."""


def _json_type(value: Any) -> str:
    """What a value is, for a reason that must not show the value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _at(data: Any, path: str, kind: type) -> Any:
    """data["a"]["b"] for the path "a.b", when it is of `kind`; Malformed otherwise."""
    value = data
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    if not isinstance(value, kind):
        raise Malformed(f"{path} is missing" if value is None else f"{path} is a JSON {_json_type(value)}")
    return value


def _optional(value: Any, kind: type) -> Any:
    """An optional field of an event: kept when it is of `kind`, else treated as absent."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def parse_event(event: Any) -> Iterator[Item]:
    """Every object notification in an invocation, whatever envelope it came in. Never raises on its
    input: a malformed record is skipped with the reason (retrying cannot mend it), and the records
    after it are still read."""
    if not isinstance(event, dict):
        yield Item(None, skip=f"malformed event: a JSON {_json_type(event)}, not an object")
        return
    if event.get("source") == "aws.s3" or "detail-type" in event:
        try:
            yield _from_eventbridge(event)
        except Malformed as exc:
            yield Item(None, skip=f"malformed EventBridge event: {exc}")
        return
    records = event.get("Records")
    if not isinstance(records, list):
        yield Item(None, skip=f"unknown event shape with keys {sorted(event)[:10]}")
        return
    if not records:  # nothing to trigger, but said so: every message (an SQS body too) leaves a line
        yield Item(None, skip="event has no records (Records is empty)")
        return
    for record in records:
        try:
            yield from _from_record(record)
        except Malformed as exc:
            yield Item(None, skip=f"malformed record: {exc}")


def _from_record(record: Any) -> Iterator[Item]:
    if not isinstance(record, dict):
        raise Malformed(f"a JSON {_json_type(record)}, not an object")
    source = record.get("eventSource") or record.get("EventSource")
    if source == "aws:sqs":
        yield from _from_sqs(record)
    elif source == "aws:s3":
        yield _from_s3_record(record)
    elif source == "aws:sns":
        yield from _from_body(_at(record, "Sns.Message", str), None)
    else:
        shown = source[:64] if isinstance(source, str) else f"a JSON {_json_type(source)}"
        yield Item(None, skip=f"unsupported event source {shown!r}")


def _from_sqs(record: Mapping[str, Any]) -> Iterator[Item]:
    message_id = _optional(record.get("messageId"), str)
    body = record.get("body")
    if not isinstance(body, str):
        yield Item(None, message_id, skip=f"malformed SQS message: body is a JSON {_json_type(body)}, not a string")
        return
    for item in _from_body(body, message_id):
        item.message_id = message_id
        yield item


def _from_body(body: str, message_id: str | None) -> Iterator[Item]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        yield Item(None, message_id, skip="message body is not JSON")
        return
    if isinstance(payload, dict) and payload.get("Type") == "Notification" and "Message" in payload:
        message = payload["Message"]
        if isinstance(message, str):
            yield from _from_body(message, message_id)  # SNS -> SQS fan-out
        else:
            yield Item(None, message_id, skip=f"malformed SNS notification: Message is a JSON {_json_type(message)}")
    elif isinstance(payload, dict) and payload.get("Event") == "s3:TestEvent":
        yield Item(None, message_id, skip="s3:TestEvent sent when the notification was configured")
    elif isinstance(payload, dict):
        yield from parse_event(payload)
    else:
        yield Item(None, message_id, skip="message body is not a JSON object")


def _from_s3_record(record: Mapping[str, Any]) -> Item:
    name = record.get("eventName", "")
    obj = _at(record, "s3.object", dict)
    found = S3Object(
        bucket=_at(record, "s3.bucket.name", str),
        key=urllib.parse.unquote_plus(_at(obj, "key", str)),  # S3 notifications URL-encode keys, '+' for space
        version_id=_optional(obj.get("versionId"), str) or None,
        etag=_optional(obj.get("eTag"), str) or None,
        size=_optional(obj.get("size"), int),
        event_time=_optional(record.get("eventTime"), str),
        sequencer=_optional(obj.get("sequencer"), str),
    )
    if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
        shown = name[:64] if isinstance(name, str) else None
        return Item(found, skip=f"event {shown!r} is not an ObjectCreated event")
    return Item(found)


def _from_eventbridge(event: Mapping[str, Any]) -> Item:
    detail_type = event.get("detail-type")
    if event.get("source") != "aws.s3" or detail_type != "Object Created":
        source, kind = (v[:64] if isinstance(v, str) else None for v in (event.get("source"), detail_type))
        return Item(None, skip=f"EventBridge event {source!r}/{kind!r} is not Object Created")
    obj = _at(event, "detail.object", dict)
    return Item(
        S3Object(
            bucket=_at(event, "detail.bucket.name", str),
            key=_at(obj, "key", str),  # EventBridge sends keys as they are, not URL-encoded
            version_id=_optional(obj.get("version-id"), str) or None,
            etag=_optional(obj.get("etag"), str) or None,
            size=_optional(obj.get("size"), int),
            event_time=_optional(event.get("time"), str),
            sequencer=_optional(obj.get("sequencer"), str),
        )
    )
