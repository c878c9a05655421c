from __future__ import annotations

from patientinsight.ingest.sources import RawChunk
from patientinsight.ingest.validation import validate_chunk


def row(uid: str, **overrides: object) -> dict:
    base = {
        "patient_uid": uid, "PMID": "123", "title": "A title", "patient": "A long enough patient summary text.",
        "age": "[[40.0, 'year']]", "gender": "F", "similar_patients": "{}", "relevant_articles": "{}",
    }  # fmt: skip
    return {**base, **overrides}


def test_valid_rows_pass() -> None:
    result = validate_chunk(RawChunk([row("1-1"), row("1-2")], 1), "src.csv", set())
    assert list(result.valid["uid"]) == ["1-1", "1-2"]
    assert result.quarantined == []


def test_failures_are_quarantined_with_row_field_reason() -> None:
    rows = [
        row("1-1"),
        row("1-2", gender="X"),
        row("1-3", patient="short"),
        row("1-4", age="[[200.0, 'year']]"),
        row("1-5", PMID="abc"),
        row("", title=""),
        row("1-7", age="[[1.0, 'eon']]"),
    ]
    result = validate_chunk(RawChunk(rows, 11), "src.csv", set())
    assert list(result.valid["uid"]) == ["1-1"]
    by_row = {q["row"]: q for q in result.quarantined}
    assert sorted(by_row) == [12, 13, 14, 15, 16, 17]
    # Each reason names the field of the source row, not the record's column (gender, not sex).
    assert by_row[12]["errors"][0]["field"] == "gender"
    assert "isin" in by_row[12]["errors"][0]["reason"]
    assert by_row[13]["errors"][0]["field"] == "patient"
    assert by_row[14]["errors"][0]["field"] == "age"
    assert by_row[15]["errors"][0]["field"] == "PMID"
    assert {e["field"] for e in by_row[16]["errors"]} == {"patient_uid", "title"}
    assert by_row[17]["errors"][0] == {"field": "age", "reason": "cannot parse age: unknown age unit 'eon'"}
    assert all(q["source"] == "src.csv" and q["raw"] for q in result.quarantined)
    assert len(result.valid) + len(result.quarantined) == len(rows)


def test_quarantine_reasons_never_carry_the_text() -> None:
    secret = "Patient text that must not appear in a reason."
    result = validate_chunk(RawChunk([row("1-1", gender="Q", patient=secret)], 1), "s.csv", set())
    assert all(secret not in e["reason"] for e in result.quarantined[0]["errors"])


def test_duplicates_across_chunks_keep_the_first() -> None:
    seen: set[str] = set()
    first = validate_chunk(RawChunk([row("1-1"), row("1-1", title="again")], 1), "s.csv", seen)
    second = validate_chunk(RawChunk([row("1-1"), row("1-2")], 3), "s.csv", seen)
    assert list(first.valid["title"]) == ["A title"]
    assert [q["row"] for q in first.quarantined] == [2]
    assert [q["row"] for q in second.quarantined] == [3]
    assert first.quarantined[0]["errors"][0]["field"] == "patient_uid"
    assert list(second.valid["uid"]) == ["1-2"]


def test_json_parse_error_rows_are_quarantined() -> None:
    result = validate_chunk(RawChunk([{"_parse_error": "line 2: Expecting value"}], 2), "s.jsonl", set())
    assert result.valid.empty
    assert result.quarantined[0]["row"] == 2
    assert result.quarantined[0]["errors"][0]["field"] == "row"


def test_bounds_beyond_any_real_record() -> None:
    """The query API refuses uids over 128 characters; PMIDs are whole numbers from 1 to 999,999,999; a
    summary is at most 100,000 characters. Each reason names the field of the source."""
    from patientinsight.ingest.validation import MAX_TEXT_CHARS
    from patientinsight.records.columns import MAX_UID_CHARS

    text = "A long enough patient summary text. "
    long_text = (text * (MAX_TEXT_CHARS // len(text) + 1))[:MAX_TEXT_CHARS]
    good = [row("u" * MAX_UID_CHARS), row("1-2", PMID="999999999"), row("1-3", patient=long_text)]
    bad = [
        (row("u" * (MAX_UID_CHARS + 1)), "patient_uid", "128 characters"),
        (row("1-5", PMID="1000000000"), "PMID", "whole number from 1 to 999999999"),
        (row("1-6", PMID="0"), "PMID", "whole number"),
        (row("1-7", PMID=1e300), "PMID", "whole number"),
        (row("1-8", patient=long_text + "x"), "patient", "longer than 100,000 characters"),
        ({**row("1-9", patient=""), "text": long_text + "x"}, "text", "longer than 100,000 characters"),  # v2
    ]
    result = validate_chunk(RawChunk(good + [r for r, _, _ in bad], 1), "src.jsonl", set())
    assert list(result.valid["uid"]) == ["u" * MAX_UID_CHARS, "1-2", "1-3"]
    errors = {q["row"]: q["errors"] for q in result.quarantined}
    for number, (_, field, words) in enumerate(bad, start=len(good) + 1):
        assert [e["field"] for e in errors[number]] == [field]
        assert words in errors[number][0]["reason"]


def test_a_malformed_csv_row_is_one_quarantined_row() -> None:
    bad = {"_csv_error": "line 7: 13 fields where the header has 10", "_fields": ["a"] * 13}
    result = validate_chunk(RawChunk([row("1-1"), bad], 5), "s.csv", set())
    assert list(result.valid["uid"]) == ["1-1"]
    (entry,) = result.quarantined
    assert entry["row"] == 6 and [e["field"] for e in entry["errors"]] == ["row"]
    assert entry["errors"][0]["reason"].startswith("malformed CSV row (line 7: 13 fields")
    assert entry["raw"] == bad
