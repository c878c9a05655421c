"""Read PMC-Patients exports (v1 CSV, v1 JSON, JSON Lines, v2) from a local path or s3://, in chunks."""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import ijson

from patientinsight.ingest.formats import described, format_of
from patientinsight.settings import Settings

try:  # botocore comes with s3fs: without it there is no s3:// source to lack credentials for
    from botocore.exceptions import NoCredentialsError, PartialCredentialsError

    _NO_CREDENTIALS: tuple[type[Exception], ...] = (NoCredentialsError, PartialCredentialsError)
except ImportError:  # pragma: no cover
    _NO_CREDENTIALS = ()

# One of the two text columns must be present: v1 calls the summary `patient`, v2 calls it `text`.
TEXT_COLUMNS = ("patient", "text")
REQUIRED_COLUMNS = ("patient_uid", "PMID", "title", "age", "gender")

# Where a message tells the user to name the source's encoding, or S3's credentials.
ENCODING_HINT = "--encoding (the PATIENTINSIGHT_SOURCE_ENCODING setting; the DAG's 'encoding' param)"
AWS_CONN_ID = Settings.model_fields["aws_conn_id"].default

_UNDECODED = re.compile("[\udc80-\udcff]")  # surrogate escapes: bytes the source encoding could not decode

# Keys a reader puts in a row it could not read as a record; records.normalize_row quarantines the row.
UNREAD_MARKERS = frozenset({"_parse_error", "_not_an_object", "_csv_error"})

# Python's csv module refuses fields over 131,072 characters, but a longer summary must reach validation
# to be quarantined with its reason. 64 Mi characters is far beyond any real field: one that long is the
# rest of the file swallowed by a quote that is never closed, which fails the file, naming the line.
_MAX_CSV_FIELD_CHARS = 1 << 26
csv.field_size_limit(max(csv.field_size_limit(), _MAX_CSV_FIELD_CHARS))  # process-wide, so only ever raised

# Encodings in which an ASCII letter is more than one byte, by their byte order marks (UTF-32 LE first:
# its mark begins with UTF-16 LE's).
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)  # fmt: skip


class SourceError(ValueError):
    """A source that cannot be read as a whole: unknown format, missing column, broken file."""


@dataclass(frozen=True)
class RawChunk:
    """Rows as read, keyed by column; `first_row` is the 1-based record number of rows[0]."""

    rows: list[dict[str, Any]]
    first_row: int


def source_format(uri: str) -> str:
    """The reader of a file ('csv', 'json' or 'jsonl'), by its suffix in formats.FORMATS."""
    fmt = format_of(uri)
    if fmt is None:
        raise SourceError(f"{uri}: unknown format; expected {described()}")
    return fmt


def check_columns(uri: str, columns: set[str]) -> None:
    """Fail with the file and the column when a required column is missing."""
    for column in REQUIRED_COLUMNS:
        if column not in columns:
            raise SourceError(f"{uri}: required column '{column}' is missing")
    if not any(c in columns for c in TEXT_COLUMNS):
        raise SourceError(f"{uri}: required column 'patient' (v1) or 'text' (v2) is missing")


def read_chunks(
    uri: str, chunk_rows: int = 5000, storage_options: dict[str, Any] | None = None, encoding: str = "utf-8"
) -> Iterator[RawChunk]:
    """Stream a source as chunks of at most `chunk_rows` rows; memory stays bounded by one chunk.
    A byte that `encoding` cannot decode stays in its row (see records.normalize_row), unless the
    whole file looks like it is in another encoding."""
    fmt = source_format(uri)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise SourceError(f"{uri}: unknown encoding '{encoding}'; name a Python codec with {ENCODING_HINT}") from None
    with _read_errors(uri, fmt, encoding), fsspec.open(uri, "rb", compression="infer", **(storage_options or {})) as f:
        decoded = _Utf8Reader(uri, f, encoding)
        stream = io.BufferedReader(decoded)
        if not stream.peek(1):
            raise SourceError(f"{uri}: the file is empty (0 bytes{_unzipped(uri)}); upload the complete export")
        rows = _READERS[fmt](uri, stream)
        yield from _chunked(uri, rows, chunk_rows)
        decoded.check_encoding(uri)


def check_source(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Fail at once when a source cannot be read at all (an unknown format, no such file, no credentials),
    before a run does any work: its first byte is read, the rest is left to read_chunks."""
    fmt = source_format(uri)
    with _read_errors(uri, fmt, "utf-8"), fsspec.open(uri, "rb", **(storage_options or {})) as f:
        f.read(1)


@contextlib.contextmanager
def _read_errors(uri: str, fmt: str, encoding: str) -> Iterator[None]:
    """What reading a source can raise, as a SourceError that names the file and says what to do."""
    try:
        yield
    except FileNotFoundError as exc:
        raise SourceError(f"{uri}: not found") from exc
    except IsADirectoryError as exc:
        raise SourceError(f"{uri}: a folder, not a file; name one export file in it") from exc
    except EOFError as exc:
        raise SourceError(
            f"{uri}: the gzip data ends early: the file is truncated (an interrupted upload or copy?); "
            "upload the complete file again"
        ) from exc
    except gzip.BadGzipFile as exc:
        if not str(exc).startswith("Not a gzipped file"):  # a CRC or length check failed
            raise SourceError(f"{uri}: the gzip data is corrupt ({exc}); upload the file again") from exc
        raise SourceError(
            f"{uri}: not gzip data, although the name ends in .gz; compress it with gzip or drop .gz from the name"
        ) from exc
    except zlib.error as exc:
        raise SourceError(f"{uri}: the gzip data is corrupt ({exc}); upload the file again") from exc
    except UnicodeDecodeError as exc:  # only where surrogateescape cannot help (an ASCII byte in UTF-16)
        raise SourceError(
            f"{uri}: cannot be decoded as {encoding} ({exc.reason}); name the file's encoding with {ENCODING_HINT}"
        ) from exc
    except (ijson.JSONError, json.JSONDecodeError) as exc:
        raise SourceError(f"{uri}: cannot be parsed as {fmt}: {exc}") from exc
    except _NO_CREDENTIALS as exc:  # s3fs passes botocore's error on as it is
        raise SourceError(
            f"{uri}: no AWS credentials to read it ({exc}); configure the Airflow connection '{AWS_CONN_ID}' "
            "(or the one PATIENTINSIGHT_AWS_CONN_ID names), or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) for the command line"
        ) from exc


def _unzipped(uri: str) -> str:
    return " after gunzip" if uri.lower().split("?", 1)[0].endswith(".gz") else ""


def wide_encoding(head: bytes) -> tuple[str, str] | None:
    """(codec, evidence) when a file's first bytes look like UTF-16 or UTF-32, else None. Read as UTF-8 or
    another 8-bit encoding, such a file is a NUL byte beside every ASCII letter, which every format reads
    as garbage (a CSV as rows of too many fields). It is told by its byte order mark, or by NULs at more
    than half the positions of one parity, which no 8-bit text has."""
    for bom, codec in _WIDE_BOMS:
        if head.startswith(bom):
            return codec, f"it starts with the {codec.upper()} byte order mark"
    sample = head[:1024]
    if len(sample) >= 16:
        for codec, lane in (("utf-16-le", sample[1::2]), ("utf-16-be", sample[0::2])):
            if lane.count(0) * 2 > len(lane):
                return codec, "a NUL byte is beside each letter"
    return None


class _Utf8Reader(io.RawIOBase):
    """The source's bytes re-encoded as UTF-8 from `encoding`. Bytes that do not decode come out as
    they went in (surrogateescape), so a reader can quarantine their row instead of failing the file;
    the counts tell a stray bad byte from a file in another encoding. A UTF-8 byte order mark (Windows
    exports start with one) is not text: utf-8-sig drops it. A UTF-16 file fails at its first block."""

    def __init__(self, uri: str, raw: IO[bytes], encoding: str) -> None:
        super().__init__()
        self._uri = uri
        self._raw = raw
        self._encoding = encoding
        codec = codecs.lookup(encoding).name
        self._decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else codec)("surrogateescape")
        self._sniff = not codec.startswith(("utf-16", "utf-32"))  # those read their own byte order mark
        self._pending = memoryview(b"")
        self._eof = False
        self.undecoded = 0  # bytes `encoding` could not decode
        self.decoded_non_ascii = 0  # non-ASCII characters it could

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending and not self._eof:
            block = self._raw.read(1 << 16)
            self._eof = not block
            if self._sniff:
                self._sniff = False
                self._check_not_wide(block)
            text = self._decoder.decode(block, final=self._eof)
            if not text.isascii():
                self._count(text)
            self._pending = memoryview(text.encode("utf-8", "surrogateescape"))
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _check_not_wide(self, head: bytes) -> None:
        wide = wide_encoding(head)
        if wide is not None:
            codec, evidence = wide
            raise SourceError(
                f"{self._uri}: cannot be decoded as {self._encoding}: it looks like {codec.upper()} ({evidence}); "
                f"name the file's encoding with {ENCODING_HINT}, e.g. --encoding {codec}"
            )

    def _count(self, text: str) -> None:
        try:  # a strict encoding fails fast on a surrogate escape; scanning for them costs more
            text.encode("utf-8")
            bad = 0
        except UnicodeEncodeError:
            bad = len(_UNDECODED.findall(text))
        self.undecoded += bad
        self.decoded_non_ascii += len(text) - len(text.encode("ascii", "ignore")) - bad

    def check_encoding(self, uri: str) -> None:
        """A stray bad byte quarantines its row; more undecodable bytes than decoded non-ASCII characters
        (a latin-1 or cp1252 file read as utf-8) mean the encoding is wrong, which no row can fix."""
        if self.undecoded >= 2 and self.undecoded > self.decoded_non_ascii:
            raise SourceError(
                f"{uri}: does not look like {self._encoding}: {self.undecoded} bytes cannot be decoded as "
                f"{self._encoding}, {self.decoded_non_ascii} non-ASCII characters can; if the file is in another "
                f"encoding (latin-1, cp1252, ...), name it with {ENCODING_HINT}"
            )


def _chunked(uri: str, rows: Iterator[dict[str, Any]], size: int) -> Iterator[RawChunk]:
    batch: list[dict[str, Any]] = []
    first = 1
    checked = False
    for row in rows:
        if not checked and not row.keys() & UNREAD_MARKERS:
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


def _csv_rows(uri: str, f: io.BufferedReader[Any]) -> Iterator[dict[str, Any]]:
    # Every field as text: the literal-string columns are parsed per row, where errors can be quarantined.
    # The reader hands over UTF-8; an undecodable byte stays as a surrogate escape, for its row alone.
    text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next((cells for cells in reader if not _blank(cells)), None)
        if header is None:
            raise SourceError(f"{uri}: the file has no header row (it is blank); upload the complete export")
        columns = _column_names(header)
        if not all(c.isascii() for c in columns) and any(_UNDECODED.search(c) for c in columns):
            raise SourceError(f"{uri}: the header row has bytes that cannot be decoded; see {ENCODING_HINT}")
        check_columns(uri, set(columns))
        end = reader.line_num
        for cells in reader:
            start, end = end + 1, reader.line_num
            if _blank(cells):
                continue
            if len(cells) != len(columns):
                # A stray quote or an unquoted comma or line break: this record alone is broken, so it is
                # quarantined with its lines and fields, and the rest of the file is read.
                lines = f"line {start}" if start == end else f"lines {start}-{end}"
                problem = f"{lines}: {len(cells)} fields where the header has {len(columns)}"
                yield {"_csv_error": problem, "_fields": cells}
                continue
            yield dict(zip(columns, cells, strict=True))
    except csv.Error as exc:
        raise SourceError(
            f"{uri}: cannot be parsed as csv at line {reader.line_num} ({exc}): a quote that is never closed?"
        ) from exc


def _blank(cells: list[str]) -> bool:
    """An empty line, or one of only spaces: not a record (pandas skipped them too)."""
    return not cells or (len(cells) == 1 and not cells[0].strip())


def _column_names(header: list[str]) -> list[str]:
    """The header's names as pandas (the reader before) gave them: an empty one is 'Unnamed: i', a repeated
    one 'name.1', so that the first column of a name is the one read."""
    names: list[str] = []
    for i, cell in enumerate(header):
        base = cell or f"Unnamed: {i}"
        name, repeat = base, 0
        while name in names:
            repeat += 1
            name = f"{base}.{repeat}"
        names.append(name)
    return names


def _json_rows(uri: str, f: io.BufferedReader[Any]) -> Iterator[dict[str, Any]]:
    # ijson walks the top-level list item by item, so a 500 MB export never sits in memory whole. One list
    # cannot be read past a broken record, so that fails the file, naming the record.
    first = f.peek(1 << 12).lstrip()[:1]
    if first and first != b"[":  # ijson would find no items in an object and read nothing
        found = "an object" if first == b"{" else "not an array"
        raise SourceError(
            f"{uri}: a JSON array of records is expected ([{{...}}, {{...}}]), but the top level is {found}; "
            "a file of one record per line is JSON Lines: name it .jsonl"
        )
    read = 0
    try:
        for item in ijson.items(f, "item", use_float=True):
            read += 1
            yield item if isinstance(item, dict) else {"_not_an_object": item}
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        # yajl's message (str or bytes) goes on with the text around the error: only its first line.
        detail = exc.args[0] if exc.args and not isinstance(exc, UnicodeDecodeError) else exc
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        reason = (text.strip().splitlines() or [type(exc).__name__])[0]
        undecodable = isinstance(exc, UnicodeDecodeError) or "UTF8" in reason
        raise SourceError(
            f"{uri}: cannot be parsed as json at record {read + 1} ({reason}), nor anything after it: fix that "
            "record, or export JSON Lines, where a broken line is one quarantined row"
            + (f"; if the file is not in the configured encoding, name it with {ENCODING_HINT}" if undecodable else "")
        ) from exc


def _jsonl_rows(uri: str, f: io.BufferedReader[Any]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            # A byte that did not decode stays a surrogate escape in its string, for records to quarantine.
            item = json.loads(line.decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError) as exc:
            # A broken line is one bad row, not a broken file: it goes to quarantine. ValueError beyond
            # JSONDecodeError: an integer of more than 4,300 digits, which Python will not convert.
            if isinstance(exc, json.JSONDecodeError):
                reason = exc.msg
            elif isinstance(exc, RecursionError):
                reason = "nested too deeply"
            else:
                reason = "a number too long to read"
            yield {"_parse_error": f"line {number}: {reason}"}
            continue
        yield item if isinstance(item, dict) else {"_not_an_object": item}


# Each reader of formats.FORMATS: (uri, stream) -> raw rows; _chunked batches the rows of every format.
_READERS: dict[str, Callable[[str, io.BufferedReader[Any]], Iterator[dict[str, Any]]]] = {
    "csv": _csv_rows,
    "json": _json_rows,
    "jsonl": _jsonl_rows,
}
