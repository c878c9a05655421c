"""AWS's documented sample events for Lambda (S3 notification, the same wrapped in SQS, EventBridge
"Object Created"), with the object's fields filled in. Shapes as in the AWS Lambda and S3 guides."""

from __future__ import annotations

import copy
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

# "Example Amazon S3 notification event" of the AWS Lambda developer guide.
S3_SAMPLE: dict[str, Any] = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-2",
            "eventTime": "2019-09-03T19:37:27.192Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AWS:AIDAINPONIXQXHT3IKHL2"},
            "requestParameters": {"sourceIPAddress": "205.255.255.255"},
            "responseElements": {
                "x-amz-request-id": "D82B88E5F771F645",
                "x-amz-id-2": "vlR7PnpV2Ce81l0PRw6jlUpck7Jo5ZsQjryTjKlc5aLWGVHPZLj5NeC6qMa0emYBDXOo6QBU0Wo=",
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "828aa6fc-f7b5-4305-8584-487c791949c1",
                "bucket": {
                    "name": "DOC-EXAMPLE-BUCKET",
                    "ownerIdentity": {"principalId": "A3I5XTEXAMAI3E"},
                    "arn": "arn:aws:s3:::lambda-artifacts-deafc19498e3f2df",
                },
                "object": {
                    "key": "b21b84d653bb07b05b1e6b33684dc11b",
                    "size": 1305107,
                    "eTag": "b21b84d653bb07b05b1e6b33684dc11b",
                    "sequencer": "0C0F6F405D6ED209E1",
                },
            },
        }
    ]
}

# "Example Amazon SQS message event (standard queue)" of the AWS Lambda developer guide.
SQS_MESSAGE_SAMPLE: dict[str, Any] = {
    "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
    "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
    "body": "Test message.",
    "attributes": {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185",
    },
    "messageAttributes": {},
    "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
    "eventSource": "aws:sqs",
    "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
    "awsRegion": "us-east-2",
}

# "Object Created" of the Amazon S3 user guide's EventBridge event message structure.
EVENTBRIDGE_SAMPLE: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "111122223333",
    "time": "2021-11-12T00:00:00Z",
    "region": "ca-central-1",
    "resources": ["arn:aws:s3:::amzn-s3-demo-bucket1"],
    "detail": {
        "version": "0",
        "bucket": {"name": "amzn-s3-demo-bucket1"},
        "object": {
            "key": "example-key",
            "size": 5,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
            "sequencer": "617f08299329d189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": "123456789012",
        "source-ip-address": "1.2.3.4",
        "reason": "PutObject",
    },
}


@dataclass(frozen=True)
class CreatedObject:
    """The object an event reports created. A field left None is the documented sample's; a version id is
    sent only when given (the samples' buckets are unversioned)."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None

    def fields(self, sample: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
        """The event's "object", its fields named as the event names them (`names`: ours to theirs)."""
        given = {"size": self.size, "etag": self.etag, "sequencer": self.sequencer}
        obj = {names[f]: sample[names[f]] if value is None else value for f, value in given.items()}
        if self.version_id:
            obj[names["version_id"]] = self.version_id
        return obj


S3_NAMES = {"size": "size", "etag": "eTag", "sequencer": "sequencer", "version_id": "versionId"}
EVENTBRIDGE_NAMES = {"size": "size", "etag": "etag", "sequencer": "sequencer", "version_id": "version-id"}


def s3_event(*args: Any, event_name: str = "ObjectCreated:Put", **kwargs: Any) -> dict[str, Any]:
    """The documented S3 notification for `CreatedObject(*args, **kwargs)`; the key URL-encoded as S3 sends
    it ('+' for space)."""
    created = CreatedObject(*args, **kwargs)
    event = copy.deepcopy(S3_SAMPLE)
    record = event["Records"][0]
    record["eventName"] = event_name
    record["s3"]["bucket"]["name"] = created.bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{created.bucket}"
    key = urllib.parse.quote_plus(created.key, safe="/")
    record["s3"]["object"] = {"key": key, **created.fields(record["s3"]["object"], S3_NAMES)}
    return event


def sqs_event(*bodies: dict[str, Any], message_ids: list[str] | None = None) -> dict[str, Any]:
    """The documented SQS event, one message per body (an S3 notification as the message body)."""
    records = []
    for i, body in enumerate(bodies):
        message = copy.deepcopy(SQS_MESSAGE_SAMPLE)
        message["messageId"] = message_ids[i] if message_ids else f"059f36b4-87a3-44ab-83d2-66197583{i:04d}"
        message["body"] = json.dumps(body)
        records.append(message)
    return {"Records": records}


def eventbridge_event(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The documented EventBridge "Object Created" event for `CreatedObject(*args, **kwargs)`; EventBridge
    sends the key as it is."""
    created = CreatedObject(*args, **kwargs)
    event = copy.deepcopy(EVENTBRIDGE_SAMPLE)
    event["resources"] = [f"arn:aws:s3:::{created.bucket}"]
    event["detail"]["bucket"]["name"] = created.bucket
    event["detail"]["object"] = {"key": created.key, **created.fields(event["detail"]["object"], EVENTBRIDGE_NAMES)}
    return event


class LambdaContext:
    """The part of the Lambda runtime's context object the handler reads: the time left."""

    def __init__(self, remaining_s: float) -> None:
        self._end = time.monotonic() + remaining_s
        self.function_name = "patientinsight-s3-trigger"
        self.aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._end - time.monotonic()) * 1000), 0)
