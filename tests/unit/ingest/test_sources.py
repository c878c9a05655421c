from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from patientinsight.ingest.sources import SourceError, check_source, read_chunks, source_format

V1_ROW = {
    "patient_id": "0",
    "patient_uid": "7665777-1",
    "PMID": "33492400",
    "file_path": "comm/PMC007xxxxxx/PMC7665777.xml",
    "title": "A case report",
    "patient": "This 60-year-old male was hospitalized due to moderate ARDS from COVID-19.",
    "age": "[[60.0, 'year']]",
    "gender": "M",
    "relevant_articles": "{'33492400': 2}",
    "similar_patients": "{'7665777-2': 2}",
}


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def rows_of(uri: str, chunk_rows: int = 1000) -> list[dict]:
    return [row for chunk in read_chunks(uri, chunk_rows) for row in chunk.rows]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.csv", "csv"), ("a.CSV.gz", "csv"), ("a.json", "json"), ("a.jsonl", "jsonl"),
     ("s3://b/k/a.ndjson.gz", "jsonl"), ("file:///x/a.json.gz", "json")],
)  # fmt: skip
def test_source_format(name: str, fmt: str) -> None:
    assert source_format(name) == fmt


def test_unknown_format_names_the_file() -> None:
    with pytest.raises(SourceError, match=r"a\.parquet: unknown format"):
        source_format("a.parquet")


def test_v1_csv_reads_literal_strings_as_text(tmp_path: Path) -> None:
    rows = rows_of(str(write_csv(tmp_path / "v1.csv", [V1_ROW, {**V1_ROW, "patient_uid": "7665777-2"}])))
    assert [r["patient_uid"] for r in rows] == ["7665777-1", "7665777-2"]
    assert rows[0]["age"] == "[[60.0, 'year']]"


def test_v1_json_list_streams(tmp_path: Path) -> None:
    typed = {**V1_ROW, "age": [[60.0, "year"]], "relevant_articles": {"33492400": 2}, "PMID": 33492400}
    path = tmp_path / "v1.json"
    path.write_text(json.dumps([typed] * 5))
    chunks = list(read_chunks(str(path), chunk_rows=2))
    assert [len(c.rows) for c in chunks] == [2, 2, 1]
    assert [c.first_row for c in chunks] == [1, 3, 5]
    assert chunks[0].rows[0]["age"] == [[60.0, "year"]]


def test_jsonl_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "v1.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(3):
            f.write(json.dumps({**V1_ROW, "patient_uid": f"1-{i}"}) + "\n")
    assert [r["patient_uid"] for r in rows_of(str(path))] == ["1-0", "1-1", "1-2"]


def test_file_uri(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "v1.csv", [V1_ROW])
    assert len(rows_of(path.as_uri())) == 1


def test_v2_text_column_and_unknown_columns(tmp_path: Path) -> None:
    v2 = {k: v for k, v in V1_ROW.items() if k not in ("patient", "relevant_articles", "similar_patients")}
    v2 |= {
        "text": "A 45-year-old woman presented with fever and a rash.",
        "pub_date": "2021-03-02",
        "extra": "x",
    }
    path = tmp_path / "v2.jsonl"
    path.write_text(json.dumps(v2) + "\n")
    (row,) = rows_of(str(path))
    assert row["text"].startswith("A 45-year-old")
    assert row["pub_date"] == "2021-03-02"


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "broken.csv", [{k: v for k, v in V1_ROW.items() if k != "gender"}])
    with pytest.raises(SourceError, match=r"broken\.csv: required column 'gender' is missing"):
        rows_of(str(path))


def test_missing_text_column(tmp_path: Path) -> None:
    path = tmp_path / "notext.json"
    path.write_text(json.dumps([{k: v for k, v in V1_ROW.items() if k != "patient"}]))
    with pytest.raises(SourceError, match=r"notext\.json: required column 'patient' \(v1\) or 'text' \(v2\)"):
        rows_of(str(path))


def test_broken_jsonl_line_is_a_row_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(V1_ROW) + "\n{not json\n" + json.dumps(V1_ROW) + "\n")
    rows = rows_of(str(path))
    assert len(rows) == 3
    assert rows[1]["_parse_error"].startswith("line 2")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.csv: not found"):
        rows_of(str(tmp_path / "nope.csv"))


def test_the_source_check_fails_at_once_with_what_read_would_say(tmp_path: Path) -> None:
    """What patient_ingest's first task checks (the trigger form's source): only whether it can be read."""
    with pytest.raises(SourceError, match=r"nope\.csv: not found"):
        check_source(str(tmp_path / "nope.csv"))
    with pytest.raises(SourceError, match=r"notes\.txt: unknown format"):
        check_source(str(tmp_path / "notes.txt"))
    (tmp_path / "export.csv").mkdir()
    with pytest.raises(SourceError, match=r"export\.csv: a folder, not a file"):
        check_source(str(tmp_path / "export.csv"))
    check_source(str(write_csv(tmp_path / "fine.csv", [V1_ROW])))
    check_source(f"file://{write_csv(tmp_path / 'also.csv', [V1_ROW])}")


def test_broken_json_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"patient_uid": "1-1", ')
    with pytest.raises(SourceError, match=r"bad\.json: cannot be parsed as json"):
        rows_of(str(path))
