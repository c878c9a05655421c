"""Validate normalized records with pandera; every failure becomes a quarantine entry with its reason."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pandera.pandas as pa

from patientinsight.ingest.records import Normalized, normalize_row, printable
from patientinsight.ingest.sources import RawChunk
from patientinsight.records.columns import MAX_UID_CHARS, RECORD_COLUMNS

MIN_TEXT_CHARS = 20
# The longest summary of the 1,200 real records is 13,746 characters (mean about 3,000). 100,000 leaves
# room for the longest case report and still refuses a file's worth of text in one field (1.14 million
# characters came from a broken export), which would be embedded, stored and shown whole.
MAX_TEXT_CHARS = 100_000
# PMIDs are positive whole numbers handed out in order: about 40 million by 2025, 1.5 million a year. Nine
# digits without a leading zero leave centuries of room, and refuse 0, 1e300 written out, or -1.
PMID_PATTERN = r"^[1-9][0-9]{0,8}$"

VALID_RECORD = pa.DataFrameSchema(
    {
        "uid": pa.Column(
            str,
            [
                pa.Check.str_matches(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
                pa.Check.str_length(
                    max_value=MAX_UID_CHARS,
                    error=f"longer than {MAX_UID_CHARS} characters: the query API refuses such a uid, so the "
                    "case could never be opened",
                ),
            ],
        ),
        "pmid": pa.Column(
            str, pa.Check.str_matches(PMID_PATTERN, error="not a PMID: a whole number from 1 to 999999999")
        ),
        "title": pa.Column(str, pa.Check.str_length(min_value=1)),
        "text": pa.Column(
            str,
            [
                pa.Check.str_length(min_value=MIN_TEXT_CHARS),
                pa.Check.str_length(
                    max_value=MAX_TEXT_CHARS,
                    error=f"longer than {MAX_TEXT_CHARS:,} characters, far beyond any real summary",
                ),
            ],
        ),
        "age_years": pa.Column(float, pa.Check.in_range(0.0, 130.0), nullable=True),
        "sex": pa.Column(str, pa.Check.isin(["M", "F"])),
        "pub_date": pa.Column(str, nullable=True),
        "similar_patients": pa.Column(str),
        "relevant_articles": pa.Column(str),
        "content_hash": pa.Column(str, pa.Check.str_length(64, 64)),
    },
    strict=True,
    coerce=False,
)


@dataclass
class ChunkResult:
    """The valid records of a chunk as a frame, and one quarantine entry per rejected row."""

    valid: pd.DataFrame
    quarantined: list[dict[str, Any]] = field(default_factory=list)


def _frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(list(records), columns=list(RECORD_COLUMNS))
    # Relevance maps travel as JSON text: parquet columns need one type, and the keys differ per row.
    for name in ("similar_patients", "relevant_articles"):
        frame[name] = frame[name].map(lambda v: json.dumps(v, sort_keys=True))
    frame["age_years"] = frame["age_years"].astype("float64")
    frame["pub_date"] = frame["pub_date"].astype("object")
    return frame


def _reason(column: str, check: str, number: Any) -> str:
    """A failed check in words: its error where it has one, else its name ("failed isin(['M', 'F'])")."""
    schema_column = VALID_RECORD.columns.get(column)
    if schema_column is not None and isinstance(number, (int, float)) and not pd.isna(number):
        error = schema_column.checks[int(number)].error
        if error:
            return str(error)
    return f"failed {check}"


def validate_chunk(chunk: RawChunk, source: str, seen_uids: set[str]) -> ChunkResult:
    """Normalize and validate one chunk. `seen_uids` spans the whole source so duplicates are caught
    across chunks: the first record of a uid is kept, later ones are quarantined."""
    normalized: list[Normalized] = [normalize_row(raw) for raw in chunk.rows]
    row_numbers = [chunk.first_row + i for i in range(len(chunk.rows))]
    errors: dict[int, list[tuple[str, str]]] = {i: list(n.errors) for i, n in enumerate(normalized) if n.errors}
    # A row that could not be read at all (a broken JSON line or CSV row) has no fields to fail the schema on.
    unread = {i for i, errs in errors.items() if any(f == "row" for f, _ in errs)}

    frame = _frame(n.record for n in normalized)
    try:
        VALID_RECORD.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        for _, case in cases.iterrows():
            index = case["index"]
            column = case["column"] if isinstance(case["column"], str) else "row"
            reason = _reason(column, str(case["check"]), case.get("check_number"))
            # Each reason names the field of the source (`age`, `patient`), not the record's column.
            if index is None or (isinstance(index, float) and pd.isna(index)):
                # A column-level failure (wrong dtype for the whole column) concerns every row.
                for i in range(len(frame)):
                    errors.setdefault(i, []).append((normalized[i].source_field(column), reason))
                continue
            if int(index) not in unread:
                errors.setdefault(int(index), []).append((normalized[int(index)].source_field(column), reason))

    for i, uid in enumerate(frame["uid"]):
        if i in errors or not uid:
            continue
        if uid in seen_uids:
            duplicate = "duplicate uid in this source; the first occurrence was kept"
            errors[i] = [(normalized[i].source_field("uid"), duplicate)]
        else:
            seen_uids.add(uid)

    # printable: an undecodable byte is written out as \xff, so the entry can be written as UTF-8 JSON.
    quarantined = [
        {
            "source": source,
            "row": row_numbers[i],
            "uid": printable(frame.at[i, "uid"]) or None,
            "errors": [{"field": f, "reason": r} for f, r in dict.fromkeys(errs)],
            "raw": printable(chunk.rows[i]),
        }
        for i, errs in sorted(errors.items())
    ]
    valid = frame.drop(index=sorted(errors)).reset_index(drop=True)
    return ChunkResult(valid, quarantined)
