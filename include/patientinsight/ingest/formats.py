"""The source formats ingest reads, by file-name suffix: the one table that the reader (sources.py), the
CLI's and the DAG's help, and the S3 trigger's suffix filters (checked by a test) follow.

Standard library only, so the CLI can name the formats without loading pandas."""

from __future__ import annotations

# suffix -> the reader of sources.py that reads it; each may also be gzipped (COMPRESSED).
FORMATS: dict[str, str] = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
COMPRESSED = ".gz"


def format_of(uri: str) -> str | None:
    """The reader's name for a file name (a trailing .gz is ignored), or None when no format has its suffix."""
    name = uri.lower().split("?", 1)[0]
    name = name.removesuffix(COMPRESSED)
    return next((fmt for suffix, fmt in FORMATS.items() if name.endswith(suffix)), None)


def trigger_suffixes() -> tuple[str, ...]:
    """The endings an upload may have to be ingested: every format's, and .gz for any of them gzipped."""
    return (*FORMATS, COMPRESSED)


def described() -> str:
    """The formats for a help text or an error message: '.csv, .json, .jsonl, .ndjson (optionally .gz)'."""
    return f"{', '.join(FORMATS)} (optionally {COMPRESSED})"
