"""Read PMC-Patients exports (v1 CSV, v1 JSON, JSON Lines, v2) from a local path or s3://, in chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import ijson
import pandas as pd

# One of the two text columns must be present: v1 calls the summary `patient`, v2 calls it `text`.
TEXT_COLUMNS = ("patient", "text")
REQUIRED_COLUMNS = ("patient_uid", "PMID", "title", "age", "gender")


class SourceError(ValueError):
    """A source that cannot be read as a whole: unknown format, missing column, broken file."""


@dataclass(frozen=True)
class RawChunk:
    """Rows as read, keyed by column; `first_row` is the 1-based record number of rows[0]."""

    rows: list[dict[str, Any]]
    first_row: int


def source_format(uri: str) -> str:
    """'csv', 'json' or 'jsonl', from the file name (a trailing .gz is ignored)."""
    name = uri.lower().split("?", 1)[0]
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json")):
        if name.endswith(suffix):
            return fmt
    raise SourceError(f"{uri}: unknown format; expected .csv, .json, .jsonl (optionally .gz)")


def check_columns(uri: str, columns: set[str]) -> None:
    """Fail with the file and the column when a required column is missing."""
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise SourceError(f"{uri}: required column '{column}' is missing")
    if not any(c in columns for c in TEXT_COLUMNS):
        raise SourceError(f"{uri}: required column 'patient' (v1) or 'text' (v2) is missing")


def read_chunks(uri: str, chunk_rows: int = 5000, storage_options: dict[str, Any] | None = None) -> Iterator[RawChunk]:
    """Stream a source as chunks of at most `chunk_rows` rows; memory stays bounded by one chunk."""
    fmt = source_format(uri)
    try:
        with fsspec.open(uri, "rb", compression="infer", **(storage_options or {})) as f:
            rows = _csv_rows(uri, f, chunk_rows) if fmt == "csv" else {"json": _json_rows, "jsonl": _jsonl_rows}[fmt](f)
            yield from _chunked(uri, rows, chunk_rows)
    except FileNotFoundError as exc:
        raise SourceError(f"{uri}: not found") from exc
    except (ijson.JSONError, json.JSONDecodeError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SourceError(f"{uri}: cannot be parsed as {fmt}: {exc}") from exc


def _chunked(uri: str, rows: Iterator[dict[str, Any]], size: int) -> Iterator[RawChunk]:
    batch: list[dict[str, Any]] = []
    first = 1
    checked = False
    for row in rows:
        if not checked and not row.keys() & {"_parse_error", "_not_an_object"}:
            # JSON has no header: the first well-formed record stands for the file's columns.
            check_columns(uri, set(row))
            checked = True
        batch.append(row)
        if len(batch) == size:
            yield RawChunk(batch, first)
            first += len(batch)
            batch = []
    if batch:
        yield RawChunk(batch, first)


def _csv_rows(uri: str, f: IO[bytes], chunk_rows: int) -> Iterator[dict[str, Any]]:
    # Everything as text: the literal-string columns are parsed per row, where errors can be quarantined.
    reader = pd.read_csv(f, dtype=str, keep_default_na=False, chunksize=chunk_rows, encoding="utf-8")
    for frame in reader:
        check_columns(uri, set(frame.columns))
        yield from frame.to_dict(orient="records")


def _json_rows(f: IO[bytes]) -> Iterator[dict[str, Any]]:
    # ijson walks the top-level list item by item, so a 500 MB export never sits in memory whole.
    for item in ijson.items(f, "item", use_float=True):
        yield item if isinstance(item, dict) else {"_not_an_object": item}


def _jsonl_rows(f: IO[bytes]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            # A broken line is one bad row, not a broken file: it goes to quarantine.
            yield {"_parse_error": f"line {number}: {exc.msg}"}
            continue
        yield item if isinstance(item, dict) else {"_not_an_object": item}
