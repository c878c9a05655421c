"""Property-based: malformed rows, as a broken export could hold them, never crash normalization or
validation, every rejected row says which field and why, and read = valid + quarantined."""

from __future__ import annotations

import json
from typing import Any

import fsspec
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from patientinsight.ingest.records import normalize_row
from patientinsight.ingest.sources import RawChunk, SourceError, read_chunks
from patientinsight.ingest.validation import VALID_RECORD, validate_chunk

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(FAST, max_examples=40)  # each example reads a file and validates a few chunks

GOOD = {
    "patient_uid": "7665777-1",
    "PMID": "33492400",
    "title": "A case report",
    "patient": "This 60-year-old male was hospitalized due to moderate ARDS from COVID-19.",
    "age": "[[60.0, 'year']]",
    "gender": "M",
    "similar_patients": "{'7665777-2': 2}",
    "relevant_articles": "{'33492400': 2}",
}

# Characters a broken file brings: NUL, undecodable bytes (surrogate escapes), lone surrogates, controls.
nasty_char = st.one_of(st.characters(), st.sampled_from(["\x00", "\udcff", "\udc80", "\ud800", "\x1b", "\ufeff"]))
nasty_text = st.text(alphabet=nasty_char, max_size=30)
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([10**400, -0.0, 2.7, True, False]),
)
json_like = st.recursive(
    st.one_of(st.none(), numbers, nasty_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(nasty_text, inner, max_size=3), st.tuples(inner, inner)
    ),
    max_leaves=8,
)
# What the CSV export holds in its literal columns: Python literals, well-formed or not.
literal_text = st.one_of(
    json_like.map(repr),
    st.builds(lambda n, u: f"[[{n!r}, {u!r}]]", numbers, st.sampled_from(["year", "month", "eon", "", "Years"])),
    st.builds(lambda k, n: f"{{{k!r}: {n!r}}}", nasty_text, numbers),
    st.sampled_from(["{'a': inf}", "{'a': 1e999}", "[[1e999, 'year']]", "[[True, 'year']]", "{'a': 2.7}", "{("]),
)
value = st.one_of(json_like, literal_text)
raw_row = st.fixed_dictionaries(
    {},
    optional={**{name: value for name in GOOD}, "text": value, "pub_date": value, "_parse_error": nasty_text},
).map(lambda messy: {**GOOD, **messy})
extra_columns = st.dictionaries(nasty_text, value, max_size=2)


def writable(entry: dict[str, Any]) -> bool:
    """validate_source writes each entry as one UTF-8 JSON line."""
    json.dumps(entry, ensure_ascii=False, default=str).encode("utf-8")
    return True


@FAST
@given(raw=raw_row, extra=extra_columns)
def test_normalize_never_raises(raw: dict[str, Any], extra: dict[str, Any]) -> None:
    normalized = normalize_row({**extra, **raw})
    assert all(isinstance(f, str) and f and isinstance(r, str) and r for f, r in normalized.errors)
    assert len(normalized.record["content_hash"]) == 64


@FAST
@given(rows=st.lists(st.one_of(raw_row, st.just(GOOD)), min_size=1, max_size=8), first=st.integers(1, 10**6))
def test_validation_counts_add_up(rows: list[dict[str, Any]], first: int) -> None:
    good = {i: f"good-{i}" for i, row in enumerate(rows) if row is GOOD}  # unique uids: all of them valid
    rows = [{**row, "patient_uid": good[i]} if i in good else row for i, row in enumerate(rows)]
    result = validate_chunk(RawChunk(rows, first), "src.csv", set())
    assert len(result.valid) + len(result.quarantined) == len(rows)
    numbers = [entry["row"] for entry in result.quarantined]
    assert numbers == sorted(set(numbers)) and all(first <= n < first + len(rows) for n in numbers)
    for entry in result.quarantined:
        assert entry["errors"] and all(e["field"] and e["reason"] for e in entry["errors"]) and writable(entry)
    VALID_RECORD.validate(result.valid)  # what passed is what the schema promises
    for column in ("uid", "title", "text", "pmid"):
        for text in result.valid[column]:
            text.encode("utf-8")  # storable: no surrogate
            assert "\x00" not in text
    assert set(good.values()) <= set(result.valid["uid"])


# ----------------------------------------------------------------------------------- whole files
HEADER = b"patient_uid,PMID,title,patient,age,gender,similar_patients,relevant_articles\n"


# Good rows carry accents and symbols, as real reports do: then a few random bad bytes are stray bytes
# (their rows are quarantined), not the sign of a file in another encoding (tested in test_messy_files).
ACCENTED = "Fièvre à 39,5 °C, SpO₂ à 88 % — réanimation, β-lactamine, µg/mL, ±2 σ, Ångström, naïve"


def good_line(uid: str) -> bytes:
    return f'{uid},1,T,"{ACCENTED}","[[60.0, \'year\']]",M,{{}},{{}}\n'.encode()


# Bytes that stay inside one CSV field: no separator, quote or line end.
field_bytes = st.binary(max_size=12).map(lambda b: bytes(c for c in b if c not in b',"\r\n'))


@FILES
@given(fields=st.lists(field_bytes, min_size=1, max_size=4))
def test_any_bytes_in_a_csv_field_quarantine_or_fail_the_file_clearly(fields: list[bytes]) -> None:
    """Raw bytes in the title of some rows: each row is valid, quarantined, or the file fails with a
    SourceError naming it (many undecodable bytes: the wrong encoding). Nothing else escapes."""
    data = HEADER + b"".join(good_line(f"g-{i}") for i in range(3))
    data += b"".join(good_line(f"b-{i}").replace(b",T,", b",T" + f + b",", 1) for i, f in enumerate(fields))
    uri = "memory://messy/fields.csv"
    with fsspec.open(uri, "wb") as f:
        f.write(data)
    seen: set[str] = set()
    try:
        results = [validate_chunk(chunk, uri, seen) for chunk in read_chunks(uri, 4)]
    except SourceError as exc:
        event("the file fails: it does not look like utf-8")
        assert str(exc).startswith(uri) and "--encoding" in str(exc)
        return
    read = sum(len(r.valid) + len(r.quarantined) for r in results)
    assert read == 3 + len(fields)
    valid = {uid for r in results for uid in r.valid["uid"]}
    assert {"g-0", "g-1", "g-2"} <= valid
    for r in results:
        for entry in r.quarantined:
            assert {e["field"] for e in entry["errors"]} <= {"title", "row"} and writable(entry)
    for i, f in enumerate(fields):
        decodable = _decodes(f) and b"\0" not in f
        assert (f"b-{i}" in valid) == decodable


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FILES
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=5))
def test_any_line_of_json_lines_is_a_row(lines: list[bytes]) -> None:
    """Random lines between good records: each non-blank line is one row, quarantined or valid."""
    good = [
        json.dumps({**GOOD, "patient": ACCENTED, "patient_uid": f"g-{i}"}, ensure_ascii=False).encode()
        for i in range(2)
    ]
    uri = "memory://messy/lines.jsonl"
    with fsspec.open(uri, "wb") as f:
        f.write(b"\n".join(good + lines) + b"\n")
    seen: set[str] = set()
    try:
        results = [validate_chunk(chunk, uri, seen) for chunk in read_chunks(uri, 4)]
    except SourceError as exc:
        event("the file fails: it does not look like utf-8")
        assert str(exc).startswith(uri) and "--encoding" in str(exc)
        return
    read = sum(len(r.valid) + len(r.quarantined) for r in results)
    assert read == len(good) + sum(1 for line in lines if line.strip())
    assert {"g-0", "g-1"} <= {uid for r in results for uid in r.valid["uid"]}
    assert all(writable(entry) for r in results for entry in r.quarantined)


# Lines a broken CSV export holds: separators and quotes in the wrong places, or too few or many fields.
csv_junk_line = st.text(alphabet=st.sampled_from(list("ab1 ,\"'[]{}")), max_size=40)


@FILES
@given(lines=st.lists(csv_junk_line, min_size=1, max_size=5))
def test_any_line_of_a_csv_is_a_row_or_runs_into_the_next(lines: list[str]) -> None:
    """Junk lines after good rows: without a quote, each non-blank line is one row (quarantined, with its
    line number, when its fields do not match the header); a quote may join lines into one row. Either
    way nothing fails the file and read = valid + quarantined (pandas failed it: 'Expected 8 fields')."""
    uri = "memory://messy/junk.csv"
    with fsspec.open(uri, "wb") as f:
        f.write(HEADER + b"".join(good_line(f"g-{i}") for i in range(3)) + "\n".join(lines).encode() + b"\n")
    seen: set[str] = set()
    results = [validate_chunk(chunk, uri, seen) for chunk in read_chunks(uri, 4)]
    read = sum(len(r.valid) + len(r.quarantined) for r in results)
    assert {"g-0", "g-1", "g-2"} <= {uid for r in results for uid in r.valid["uid"]}
    if not any('"' in line for line in lines):
        assert read == 3 + sum(1 for line in lines if line.strip())
    for entry in (e for r in results for e in r.quarantined):
        assert entry["errors"] and writable(entry)
        if entry["errors"][0]["field"] == "row":
            assert entry["errors"][0]["reason"].startswith("malformed CSV row (line")
