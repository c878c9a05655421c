"""Progress of a long ingest as data: each progress event rides on the log line that reports it (as the
record's `extra`), so a display, such as the command line's bars, reads numbers and never parses words.
The task logs keep the lines as they are; a logger without such a display ignores the events."""

from __future__ import annotations

import logging
from dataclasses import dataclass

ATTRIBUTE = "progress"  # the LogRecord attribute that holds the event


@dataclass(frozen=True)
class RowsRead:
    """Source rows read so far (ingest validation)."""

    rows: int


@dataclass(frozen=True)
class ShardsPlanned:
    """The records to embed, cut into shards of at most `shard_size` records."""

    records: int
    shards: int
    shard_size: int


@dataclass(frozen=True)
class TextsEncoded:
    """Texts the encoder has encoded out of one call's `total` (a shard's, when ingest calls it)."""

    done: int
    total: int


@dataclass(frozen=True)
class ShardEmbedded:
    """One shard finished: its records are embedded."""

    shard: int
    records: int


Progress = RowsRead | ShardsPlanned | TextsEncoded | ShardEmbedded


def extra(event: Progress) -> dict[str, Progress]:
    """The `extra` of the log call that reports `event`."""
    return {ATTRIBUTE: event}


def event_of(record: logging.LogRecord) -> Progress | None:
    """The progress event a log record carries, if any."""
    event = getattr(record, ATTRIBUTE, None)
    return event if isinstance(event, Progress) else None
