from __future__ import annotations

import pytest

from patientinsight.ingest.records import age_in_years, content_hash, normalize_row, relevance_map


@pytest.mark.parametrize(
    ("age", "years"),
    [
        ("[[60.0, 'year']]", 60.0),
        ([[6.0, "month"]], 0.5),
        ([[7.0, "year"], [6.0, "month"]], 7.5),
        ([[2.0, "week"]], round(14 / 365.25, 4)),
        ([[10.0, "day"]], round(10 / 365.25, 4)),
        ([[12.0, "hour"]], round(12 / (365.25 * 24), 4)),
        ([[3.0, "years"]], 3.0),
        ("[]", None),
        ("", None),
        (None, None),
    ],
)
def test_age_in_every_unit(age: object, years: float | None) -> None:
    assert age_in_years(age) == years


@pytest.mark.parametrize("age", ["[[5.0, 'decade']]", "[[-1.0, 'year']]", "[5, 'year']", "not a literal ("])
def test_bad_ages_raise(age: str) -> None:
    with pytest.raises((ValueError, SyntaxError)):
        age_in_years(age)


def test_relevance_map_from_literal_and_json() -> None:
    assert relevance_map("{'33492400': 2}") == {"33492400": 2}
    assert relevance_map({"7665777-2": 1}) == {"7665777-2": 1}
    assert relevance_map(None) == {}
    with pytest.raises(ValueError):
        relevance_map("[1, 2]")


def test_normalize_v1_row() -> None:
    n = normalize_row({
        "patient_uid": "7665777-1", "PMID": 33492400.0, "title": " T ", "patient": " text ",
        "age": "[[60.0, 'year']]", "gender": "m", "similar_patients": "{'7665777-2': 2}",
    })  # fmt: skip
    assert n.errors == []
    assert n.record["pmid"] == "33492400"
    assert n.record["title"] == "T"
    assert n.record["text"] == "text"
    assert n.record["sex"] == "M"
    assert n.record["similar_patients"] == {"7665777-2": 2}
    assert n.record["relevant_articles"] == {}
    assert len(n.record["content_hash"]) == 64


def test_normalize_v2_row_uses_text_and_pub_date() -> None:
    n = normalize_row({"patient_uid": "1-1", "PMID": "1", "title": "t", "text": "summary", "age": [[1.0, "day"]],
                       "gender": "F", "pub_date": "2020-01-02"})  # fmt: skip
    assert n.record["text"] == "summary"
    assert n.record["pub_date"] == "2020-01-02"


def test_unparseable_field_is_an_error_not_a_crash() -> None:
    n = normalize_row({"patient_uid": "1-1", "PMID": "1", "title": "t", "patient": "x", "age": "[[1, 'eon']]",
                       "gender": "F", "similar_patients": "{broken"})  # fmt: skip
    fields = [f for f, _ in n.errors]
    assert fields == ["age", "similar_patients"]
    assert "unknown age unit 'eon'" in n.errors[0][1]


def test_content_hash_follows_content() -> None:
    base = normalize_row({"patient_uid": "1-1", "PMID": "1", "title": "t", "patient": "x", "age": "[[1.0, 'year']]",
                          "gender": "F"}).record  # fmt: skip
    assert content_hash(base) == base["content_hash"]
    assert content_hash({**base, "text": "y"}) != base["content_hash"]
    assert content_hash({**base, "age_years": 2.0}) != base["content_hash"]


@pytest.mark.parametrize(
    "text",
    [
        "{'32320506': 1, '33492400': 2}",
        " {'7665777-2': 2,'7665777-3' :2 } ",
        "{}",
        "{'a': 0,}",
        "{'a': 1, 'a': 2}",  # the last one wins, as in Python
        "{'a': 01}",  # not a Python literal
        "{,}",
        "{'x': 3.0}",
        "{1: 2}",
        "{'a': '1'}",
        '{"a": 1}',
        "{'a\\'b': 1}",
        "[1, 2]",
    ],
)
def test_relevance_map_fast_path_agrees_with_literal_eval(text: str) -> None:
    """The regular-expression path for the CSV's usual shape gives what ast.literal_eval gives (and a
    relevance is a whole number >= 0: the string '1' is an error, 3.0 reads as 3). Text that is no
    literal is a ValueError either way (its message says what was expected, not ast's)."""
    import ast

    def whole(v: object) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and v >= 0

    try:
        parsed = ast.literal_eval(text.strip())
        expected: object = ValueError
        if isinstance(parsed, dict) and all(whole(v) for v in parsed.values()):
            expected = {str(k): int(v) for k, v in parsed.items()}
    except (ValueError, SyntaxError):
        expected = ValueError
    try:
        got: object = relevance_map(text)
    except ValueError:
        got = ValueError
    assert got == expected


def test_an_age_has_at_most_one_pair_per_unit() -> None:
    every_unit = [[1.0, "year"], [1.0, "month"], [1.0, "week"], [1.0, "day"], [1.0, "hour"]]
    assert age_in_years(every_unit) == round(1 + 1 / 12 + 7 / 365.25 + 1 / 365.25 + 1 / (365.25 * 24), 4)
    with pytest.raises(ValueError, match=r"at most 5 \[value, unit\] pairs \(one per unit\), got 100000"):
        age_in_years([[1.0, "hour"]] * 100_000)


@pytest.mark.parametrize("text", ["[[sixty, 'year']]", "{[1]: 2}", "[[60.0, 'year']", "[" * 10_000])
def test_a_field_that_is_no_literal_says_what_was_expected(text: str) -> None:
    """Not ast's message, which shows its internals: '<ast.Name object at 0x7f...>'."""
    n = normalize_row({"patient_uid": "1-1", "PMID": "1", "title": "t", "patient": "x", "age": text,
                       "gender": "F", "similar_patients": text})  # fmt: skip
    assert [f for f, _ in n.errors] == ["age", "similar_patients"]
    age, similar = (reason for _, reason in n.errors)
    assert age.startswith("cannot parse age: expected [[value, unit], ...] such as [[60.0, 'year']]")
    assert similar.startswith("cannot parse similar_patients: expected a mapping of id to relevance")
    assert all("0x" not in r and "ast" not in r for r in (age, similar))


def test_control_characters_leave_the_free_text() -> None:
    summary = "Line\x07 one\r\n\tline two\x00\x08\x0b\x0c\x1f\x7f\x85\x9b end"  # C0, DEL and C1
    n = normalize_row({"patient_uid": "1-1", "PMID": "1", "title": "\x1b[1mBold\x1b[0m", "gender": "F",
                       "patient": summary, "age": None})  # fmt: skip
    assert n.record["title"] == "[1mBold[0m"
    assert n.record["text"] == "Line one\r\n\tline two end"
    assert [f for f, _ in n.errors] == ["patient"]  # the NUL still quarantines the row, naming the field


def test_a_record_column_names_its_source_field() -> None:
    v1 = normalize_row({"patient_uid": "1-1", "patient": "x"})
    v2 = normalize_row({"patient_uid": "1-1", "text": "x"})
    assert [v1.source_field(c) for c in ("uid", "pmid", "text", "age_years", "sex")] == [
        "patient_uid", "PMID", "patient", "age", "gender",
    ]  # fmt: skip
    assert v2.source_field("text") == "text"
