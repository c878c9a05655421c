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
    assert by_row[12]["errors"][0]["field"] == "sex"
    assert "isin" in by_row[12]["errors"][0]["reason"]
    assert by_row[13]["errors"][0]["field"] == "text"
    assert by_row[14]["errors"][0]["field"] == "age_years"
    assert by_row[15]["errors"][0]["field"] == "pmid"
    assert {e["field"] for e in by_row[16]["errors"]} == {"uid", "title"}
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
    assert first.quarantined[0]["errors"][0]["field"] == "uid"
    assert list(second.valid["uid"]) == ["1-2"]


def test_json_parse_error_rows_are_quarantined() -> None:
    result = validate_chunk(RawChunk([{"_parse_error": "line 2: Expecting value"}], 2), "s.jsonl", set())
    assert result.valid.empty
    assert result.quarantined[0]["row"] == 2
    assert result.quarantined[0]["errors"][0]["field"] == "row"
