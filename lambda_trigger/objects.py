"""What is done with one object: why it is skipped, or the id of its run."""

from __future__ import annotations

import hashlib
import re

from config import Config
from events import S3Object

RUN_ID_MAX = 250  # Airflow's run_id column
# S3's naming rules for (general purpose) buckets: 3-63 characters, lowercase letters, digits, dots and
# hyphens, a letter or digit at each end, no two dots in a row. No other name can hold an upload.
BUCKET_NAME = re.compile(r"(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def skip_reason(obj: S3Object, config: Config) -> str | None:
    """Why an object is not ingested, or None when it is."""
    if not BUCKET_NAME.fullmatch(obj.bucket):
        return "bucket name is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)"
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
