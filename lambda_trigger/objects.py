"""What is done with one object: why it is skipped, or the id of its run."""

from __future__ import annotations

import hashlib
import re

from config import Config
from events import S3Object

RUN_ID_MAX = 250  # Airflow's run_id column
# Every name S3 has ever allowed for a bucket that can hold an upload: today's rules (3-63 lowercase letters,
# digits, dots and hyphens) and the legacy ones of us-east-1 buckets made before March 2018, which still
# send events (up to 255 characters, capitals and underscores too). An empty name, a slash or a space never
# named a bucket: such an event is forged or garbled.
BUCKET_NAME = re.compile(r"[A-Za-z0-9._-]{3,255}")
BAD_BUCKET = "bucket name is not one S3 allows (3-255 letters, digits, dots, hyphens or underscores)"


def skip_reason(obj: S3Object, config: Config) -> str | None:
    """Why an object is not ingested, or None when it is."""
    if not BUCKET_NAME.fullmatch(obj.bucket):
        return BAD_BUCKET
    if obj.key.endswith("/"):
        return "folder marker"
    if not obj.key.startswith(config.prefix):
        return f"outside the prefix {config.prefix!r}"
    if config.suffixes and not obj.key.lower().endswith(config.suffixes):
        return f"suffix not one of {','.join(config.suffixes)}"
    if obj.size == 0:
        return "empty object"
    return None


def run_id_for(obj: S3Object) -> str:
    """Deterministic: a redelivered event makes the same run id, so Airflow answers 409, not a second run.
    Readable part first (for the UI), then a hash of everything that identifies this upload."""
    identity = "\0".join([obj.bucket, obj.key, obj.version_id or obj.etag or "", obj.sequencer or ""])
    digest = hashlib.sha256(identity.encode(errors="surrogatepass")).hexdigest()[:24]  # a lone \ud800 too
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{obj.bucket}/{obj.key}")
    readable = re.sub(r"\.{2,}", ".", readable)[:150]  # Airflow refuses '..' (path traversal)
    run_id = f"s3__{readable}__{digest}"
    assert len(run_id) <= RUN_ID_MAX
    return run_id
