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
from patientinsight.records.columns import RECORD_COLUMNS

MIN_TEXT_CHARS = 20

VALID_RECORD = pa.DataFrameSchema(
    {
        "uid": pa.Column(str, pa.Check.str_matches(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")),
        "pmid": pa.Column(str, pa.Check.str_matches(r"^\d+$")),
        "title": pa.Column(str, pa.Check.str_length(min_value=1)),
        "text": pa.Column(str, pa.Check.str_length(min_value=MIN_TEXT_CHARS)),
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


def validate_chunk(chunk: RawChunk, source: str, seen_uids: set[str]) -> ChunkResult:
    """Normalize and validate one chunk. `seen_uids` spans the whole source so duplicates are caught
    across chunks: the first record of a uid is kept, later ones are quarantined."""
    normalized: list[Normalized] = [normalize_row(raw) for raw in chunk.rows]
    row_numbers = [chunk.first_row + i for i in range(len(chunk.rows))]
    errors: dict[int, list[tuple[str, str]]] = {i: list(n.errors) for i, n in enumerate(normalized) if n.errors}
    # A row that could not be read at all (a broken JSON line) has no fields to fail the schema on.
    unread = {i for i, errs in errors.items() if any(f == "row" for f, _ in errs)}

    frame = _frame(n.record for n in normalized)
    try:
        VALID_RECORD.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        for _, case in cases.iterrows():
            index = case["index"]
            column = case["column"] if isinstance(case["column"], str) else "row"
            check = str(case["check"])
            if index is None or (isinstance(index, float) and pd.isna(index)):
                # A column-level failure (wrong dtype for the whole column) concerns every row.
                for i in range(len(frame)):
                    errors.setdefault(i, []).append((column, f"failed {check}"))
                continue
            if int(index) not in unread:
                errors.setdefault(int(index), []).append((column, f"failed {check}"))

    for i, uid in enumerate(frame["uid"]):
        if i in errors or not uid:
            continue
        if uid in seen_uids:
            errors[i] = [("uid", "duplicate uid in this source; the first occurrence was kept")]
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
