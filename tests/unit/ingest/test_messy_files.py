"""Messy real files (issue 16): one bad row of every kind in an otherwise good file. The real ingest
runs on it; every bad row is quarantined with a reason that names its field, the good rows are indexed,
and read = indexed + quarantined."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from patientinsight import cli
from patientinsight.index.factory import make_index
from patientinsight.ingest.run import run_ingest
from patientinsight.ingest.sources import SourceError
from patientinsight.ingest.steps import validate_source
from patientinsight.settings import Settings
from tests.helpers import read_rows


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # Several bad rows in a 48-row sample is more than the default 5%; evaluation is not under test here.
    return Settings(home=tmp_path / "home", max_quarantine_ratio=0.5, eval_max_queries=0)


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def csv_line(row: dict[str, str]) -> bytes:
    return csv_bytes([row]).split(b"\r\n", 1)[1]


# The bad rows of a CSV: (uid suffix, the field its quarantine entry must name, the row's edits). Byte edits
# are made in the raw line, where the CSV writer cannot reach: {"patient": (b"old", b"new")}.
CSV_BAD: list[tuple[str, str, dict[str, Any]]] = [
    ("undecodable", "patient", {"patient": (b"presented", b"pre\xffsented")}),  # one invalid UTF-8 byte
    ("nul", "patient", {"patient": (b"presented", b"pre\x00sented")}),  # pandas would cut the field here
    ("inf-similar", "similar_patients", {"similar_patients": "{'9000000-2': 1e999}"}),  # int(inf): OverflowError
    ("inf-articles", "relevant_articles", {"relevant_articles": "{'39000000': inf}"}),
    ("bool-age", "age", {"age": "[[True, 'year']]"}),  # was 1.0 years
    ("inf-age", "age", {"age": "[[1e999, 'year']]"}),
    ("fraction", "relevant_articles", {"relevant_articles": "{'39000000': 2.7}"}),  # was 2
    ("negative", "similar_patients", {"similar_patients": "{'9000000-2': -1}"}),  # was accepted
]

# The same for JSON Lines, where each record is typed JSON: a line, as bytes, from a good record.
JSONL_BAD: list[tuple[str, str, Any]] = [
    ("undecodable", "patient", lambda r: _dumps(r).replace(b"presented", b"pre\xffsented")),
    ("nul-escape", "patient", lambda r: _dumps({**r, "patient": r["patient"].replace("presented", "pre\0sented")})),
    ("nul-byte", "row", lambda r: _dumps(r).replace(b"presented", b"pre\x00sented")),  # not JSON: a bad line
    ("infinity", "similar_patients", lambda r: _dumps({**r, "similar_patients": {"9000000-2": float("inf")}})),
    ("overflow", "relevant_articles", lambda r: _dumps(r).replace(b'"39000000": 2', b'"39000000": 1e999')),
    ("bool-age", "age", lambda r: _dumps({**r, "age": [[True, "year"]]})),
    ("fraction", "relevant_articles", lambda r: _dumps({**r, "relevant_articles": {"39000000": 2.7}})),
    ("negative", "similar_patients", lambda r: _dumps({**r, "similar_patients": {"9000000-2": -1}})),
    ("surrogate", "title", lambda r: _dumps(r).replace(b'"title": "', b'"title": "\\ud800')),
    ("list-title", "title", lambda r: _dumps({**r, "title": ["not", "text"]})),
]


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def typed(row: dict[str, str]) -> dict[str, Any]:
    """A sample row as the JSON exports type it."""
    import ast

    literals = ("age", "similar_patients", "relevant_articles")
    return {k: ast.literal_eval(v) if k in literals else v for k, v in row.items()}


Expected = dict[int, tuple[str, str]]  # row number: (uid, the field its quarantine entry names)


def messy_csv(sample: Path, out: Path) -> tuple[Path, Expected]:
    """The sample with every kind of bad row appended; returns the path and the bad rows."""
    rows = read_rows(sample)
    template = next(r for r in rows if "presented" in r["patient"] and r["similar_patients"] != "{}")
    data, expected = csv_bytes(rows), {}
    for number, (suffix, field, edits) in enumerate(CSV_BAD, start=len(rows) + 1):
        row = {**template, "patient_uid": f"{template['patient_uid']}{suffix}"}
        row.update({k: v for k, v in edits.items() if isinstance(v, str)})
        line = csv_line(row)
        for old, new in (v for v in edits.values() if isinstance(v, tuple)):
            line = line.replace(old, new, 1)
        data += line
        expected[number] = (row["patient_uid"], field)
    out.write_bytes(data)
    return out, expected


def messy_jsonl(sample: Path, out: Path) -> tuple[Path, Expected]:
    rows = [typed(r) for r in read_rows(sample)]
    template = next(r for r in rows if "presented" in r["patient"] and r["relevant_articles"] == {"39000000": 2})
    lines, expected = [_dumps(r) for r in rows], {}
    for number, (suffix, field, make) in enumerate(JSONL_BAD, start=len(rows) + 1):
        uid = f"{template['patient_uid']}{suffix}"
        lines.append(make({**template, "patient_uid": uid}))
        expected[number] = (uid, field)
    with gzip.open(out, "wb") as f:  # through gzip too
        f.write(b"\n".join(lines) + b"\n")
    return out, expected


def quarantine(report: dict[str, Any]) -> list[dict[str, Any]]:
    with (Path(report["report_dir"]) / "quarantine.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("make", [messy_csv, messy_jsonl], ids=["csv", "jsonl.gz"])
def test_every_bad_row_is_quarantined_naming_its_field(
    make: Any, settings: Settings, sample_csv: Path, tmp_path: Path
) -> None:
    name = "messy.csv" if make is messy_csv else "messy.jsonl.gz"
    source, expected = make(sample_csv, tmp_path / name)
    good = {r["patient_uid"] for r in read_rows(sample_csv)}  # the sample's own duplicate is kept once

    report = run_ingest(str(source), settings, run_id="messy")

    assert report["read"] == len(read_rows(sample_csv)) + len(expected)
    assert report["read"] == report["indexed"] + report["quarantined"]
    assert report["indexed"] == len(good) and report["quarantined"] == len(expected) + 1
    entries = {e["row"]: e for e in quarantine(report) if e["row"] in expected}
    # Each bad row by its number in the file, with the field named (a line that is not JSON has no uid).
    assert {row: ({e["field"] for e in entry["errors"]}, entry["uid"]) for row, entry in entries.items()} == {
        row: ({field}, None if field == "row" else uid) for row, (uid, field) in expected.items()
    }
    assert all(error["reason"] for entry in entries.values() for error in entry["errors"])
    indexed = make_index(settings).open(report["index_version"]).hashes()
    assert set(indexed) == good


def test_the_quarantine_keeps_the_bad_field_whole(settings: Settings, sample_csv: Path, tmp_path: Path) -> None:
    """The NUL row's summary is kept whole in the quarantine (pandas alone would cut it at the NUL), and
    the undecodable byte is written out as \\xff; the report shows the fields."""
    source, expected = messy_csv(sample_csv, tmp_path / "messy.csv")
    uids = {uid for uid, _ in expected.values()}
    template = next(r for r in read_rows(sample_csv) if r["patient_uid"] + "nul" in uids)
    run_dir = settings.runs_dir / "whole"
    run_dir.mkdir(parents=True)
    report = validate_source(str(source), run_dir, chunk_rows=10, max_quarantine_ratio=0.5)
    assert report["read"] == report["valid"] + report["quarantined"]
    assert report["quarantined_by_field"]["patient"] == 2
    entries = {e["uid"]: e for e in quarantine({"report_dir": run_dir})}
    nul = entries[template["patient_uid"] + "nul"]
    assert nul["raw"]["patient"] == template["patient"].replace("presented", "pre\0sented", 1)
    assert "NUL" in nul["errors"][0]["reason"]
    undecodable = entries[template["patient_uid"] + "undecodable"]
    assert undecodable["raw"]["patient"] == template["patient"].replace("presented", "pre\\xffsented", 1)
    assert "byte 0xff" in undecodable["errors"][0]["reason"] and "--encoding" in undecodable["errors"][0]["reason"]


def test_a_json_array_quarantines_its_bad_records(sample_csv: Path, tmp_path: Path) -> None:
    """A JSON list: what JSON can say per record (a NUL escape, true as an age, 2.7, -1, a list as a title,
    an item that is not an object) is quarantined per record; the rest is validated."""
    rows = [typed(r) for r in read_rows(sample_csv)]
    template = next(r for r in rows if r["relevant_articles"] == {"39000000": 2})
    bad: list[tuple[Any, str]] = [
        ({"patient": template["patient"] + "\0"}, "patient"),
        ({"age": [[True, "year"]]}, "age"),
        ({"relevant_articles": {"39000000": 2.7}}, "relevant_articles"),
        ({"similar_patients": {"9000000-2": -1}}, "similar_patients"),
        ({"title": {"not": "text"}}, "title"),
    ]
    records: list[Any] = rows + [{**template, "patient_uid": f"bad-{i}", **edit} for i, (edit, _) in enumerate(bad)]
    records.append(["not", "an", "object"])
    source = tmp_path / "messy.json"
    source.write_text(json.dumps(records))
    run_dir = tmp_path / "run"
    report = validate_source(str(source), run_dir, chunk_rows=7, max_quarantine_ratio=0.5)
    assert report["read"] == len(records) == report["valid"] + report["quarantined"]
    entries = quarantine({"report_dir": run_dir})
    by_uid = {e["uid"]: {err["field"] for err in e["errors"]} for e in entries}
    assert {f"bad-{i}": {field} for i, (_, field) in enumerate(bad)}.items() <= by_uid.items()
    assert [e["errors"][0]["field"] for e in entries if e["row"] == len(records)] == ["row"]
    assert report["valid"] == len({r["patient_uid"] for r in rows})


# ----------------------------------------------------------------------------------- the source encoding
def cp1252_sample(sample: Path, out: Path) -> Path:
    """The sample as a Windows export writes it: cp1252, with curly quotes and accents in every title."""
    rows = read_rows(sample)
    for row in rows:
        row["title"] = f"“{row['title']}” – Hôpital Saint-Étienne"
    text = csv_bytes(rows).decode("utf-8")
    out.write_bytes(text.encode("cp1252"))
    return out


def test_a_file_in_another_encoding_names_the_option(settings: Settings, sample_csv: Path, tmp_path: Path) -> None:
    source = cp1252_sample(sample_csv, tmp_path / "windows.csv")
    with pytest.raises(SourceError) as caught:
        run_ingest(str(source), settings, run_id="wrong-encoding")
    message = str(caught.value)
    assert message.startswith(f"{source}: does not look like utf-8")
    assert "--encoding" in message and "PATIENTINSIGHT_SOURCE_ENCODING" in message and "cp1252" in message
    assert make_index(settings).published() is None


def test_the_encoding_flag_reads_it(
    settings: Settings, sample_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    source = cp1252_sample(sample_csv, tmp_path / "windows.csv")
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    assert cli.main(["ingest", str(source), "--encoding", "cp1252", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["read"] == report["indexed"] + report["quarantined"] and report["quarantined"] == 1
    reader = make_index(settings).open(report["index_version"])
    titles = reader.records(list(reader.hashes())[:3])["title"]
    assert titles.str.endswith("” – Hôpital Saint-Étienne").all()
    validation = json.loads((Path(report["report_dir"]) / "validation.json").read_text())
    assert validation["encoding"] == "cp1252"


def test_the_encoding_setting() -> None:
    assert Settings().source_encoding == "utf-8"
    assert Settings(source_encoding="latin-1").source_encoding == "latin-1"
    with pytest.raises(ValueError, match="unknown encoding 'utf-9'"):
        Settings(source_encoding="utf-9")


# ----------------------------------------------------------------------------------- issue 27: odd exports
def validated(source: Path, run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """validate_source's report and quarantine entries: reading and validation, without embedding."""
    report = validate_source(str(source), run_dir, chunk_rows=10, max_quarantine_ratio=0.5)
    assert report["read"] == report["valid"] + report["quarantined"]
    return report, quarantine({"report_dir": run_dir})


def export(sample: Path, fmt: str) -> bytes:
    """The sample in one of the formats, as UTF-8 bytes."""
    rows = read_rows(sample)
    if fmt == "csv":
        return csv_bytes(rows)
    if fmt == "json":
        return json.dumps([typed(r) for r in rows], ensure_ascii=False).encode("utf-8")
    return b"\n".join(_dumps(typed(r)) for r in rows) + b"\n"


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_a_utf8_byte_order_mark_is_not_text(fmt: str, sample_csv: Path, tmp_path: Path) -> None:
    """Windows exports start with a BOM: the first row reads like any other (JSON Lines quarantined it,
    JSON failed the file)."""
    source = tmp_path / f"windows.{fmt}"
    source.write_bytes(b"\xef\xbb\xbf" + export(sample_csv, fmt))
    report, entries = validated(source, tmp_path / "run")
    assert report["read"] == len(read_rows(sample_csv)) and report["quarantined"] == 1  # the sample's duplicate
    assert [e["errors"][0]["field"] for e in entries] == ["patient_uid"]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
@pytest.mark.parametrize(
    ("codec", "named"), [("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")]
)
def test_a_utf16_file_names_the_encoding_option(
    fmt: str, codec: str, named: str, sample_csv: Path, tmp_path: Path
) -> None:
    """Every format says the same (a CSV failed with a tokenizer error), with or without a BOM."""
    source = tmp_path / f"unicode.{fmt}"
    source.write_bytes(export(sample_csv, fmt).decode("utf-8").encode(codec))
    with pytest.raises(SourceError) as caught:
        validated(source, tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"{source}: cannot be decoded as utf-8: it looks like {named.upper()}")
    assert f"--encoding {named}" in message and "PATIENTINSIGHT_SOURCE_ENCODING" in message
    assert "tokeniz" not in message.lower()


def test_a_utf16_file_reads_with_its_encoding(sample_csv: Path, tmp_path: Path) -> None:
    source = tmp_path / "unicode.csv"
    source.write_bytes(export(sample_csv, "csv").decode("utf-8").encode("utf-16"))
    report = validate_source(str(source), tmp_path / "run", 10, 0.5, encoding="utf-16")
    assert report["read"] == len(read_rows(sample_csv)) and report["quarantined"] == 1


def test_a_json_object_is_not_an_array_of_records(sample_csv: Path, tmp_path: Path) -> None:
    source = tmp_path / "wrapped.json"
    source.write_text(json.dumps({"records": [typed(r) for r in read_rows(sample_csv)]}))
    with pytest.raises(SourceError) as caught:
        validated(source, tmp_path / "run")
    message = str(caught.value)
    assert message.startswith(f"{source}: a JSON array of records is expected") and "an object" in message


def test_a_malformed_csv_row_is_quarantined_with_its_line(sample_csv: Path, tmp_path: Path) -> None:
    """A row with unquoted commas, and one whose quote is not closed on its line, go to quarantine naming
    their lines and keeping their fields; the rest is read (pandas failed the file: 'Expected 10 fields')."""
    rows = read_rows(sample_csv)
    lines = csv_bytes(rows).split(b"\r\n")  # the header, then one line per row (no line breaks in the sample)
    assert len(lines) == len(rows) + 2 and all(b'"' in line for line in lines[1:-1])
    extra = lines[5] + b",unquoted, commas,x"  # record 6, on line 7
    stray = b'9-9,9-9,1,x,"a title whose quote is not closed,A summary without quotes,[],M,{},{}'  # line 22
    data = b"\r\n".join([*lines[:6], extra, *lines[6:20], stray, *lines[20:]])
    source = tmp_path / "malformed.csv"
    source.write_bytes(data)

    report, entries = validated(source, tmp_path / "run")
    unread = [e for e in entries if e["errors"][0]["field"] == "row"]
    assert [e["row"] for e in unread] == [6, 21]  # records 6 and 21, on lines 7 and 22
    first, second = (e["errors"][0]["reason"] for e in unread)
    assert first.startswith("malformed CSV row (line 7: 13 fields where the header has 10)")
    assert unread[0]["raw"]["_fields"][10:] == ["unquoted", " commas", "x"]
    # The quote runs on into the next row (a quoted field may hold line breaks), which is quarantined with it.
    assert second.startswith("malformed CSV row (lines 22-23: ")
    assert unread[1]["raw"]["_fields"][4].startswith("a title whose quote is not closed,A summary")
    assert report["read"] == len(rows) + 1
    assert report["valid"] == len({r["patient_uid"] for r in rows}) - 1  # row 20 went with the stray quote


HUGE_TEXT_CHARS = 1_140_000

# Values that parse but no real record has: (uid suffix, the field named, a word of the reason, the edit).
HOSTILE: list[tuple[str, str, str, dict[str, Any]]] = [
    ("long-uid", "patient_uid", "128", {"patient_uid": "9" * 200}),  # the API refuses it: never openable
    ("pmid-1e300", "PMID", "PMID", {"PMID": 1e300}),
    ("pmid-zero", "PMID", "PMID", {"PMID": 0}),
    ("pmid-fraction", "PMID", "PMID", {"PMID": 33492400.5}),
    ("many-ages", "age", "at most 5", {"age": [[1.0, "hour"]] * 100_000}),  # 11 years, once accepted
    ("huge-text", "patient", "100,000", {"patient": "Fever. " * (HUGE_TEXT_CHARS // 7)}),
    ("old-age", "age", "in_range", {"age": [[200.0, "year"]]}),  # named age, not the column age_years
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_values_beyond_any_real_record_are_quarantined(fmt: str, sample_csv: Path, tmp_path: Path) -> None:
    rows = [typed(r) for r in read_rows(sample_csv)]
    template = rows[0]
    bad = [{**template, "patient_uid": f"{template['patient_uid']}{suffix}", **edit} for suffix, *_, edit in HOSTILE]
    source = tmp_path / f"hostile.{fmt}"
    if fmt == "csv":  # the CSV export writes the literal columns as Python literals
        literals = ("age", "similar_patients", "relevant_articles")
        source.write_bytes(
            csv_bytes([{k: repr(v) if k in literals else str(v) for k, v in r.items()} for r in rows + bad])
        )
    else:
        source.write_bytes(b"\n".join(_dumps(r) for r in rows + bad) + b"\n")

    report, entries = validated(source, tmp_path / "run")
    assert report["read"] == len(rows) + len(bad)
    errors = {e["row"]: e["errors"] for e in entries if e["row"] > len(rows)}
    for number, (suffix, field, word, _) in enumerate(HOSTILE, start=len(rows) + 1):
        assert [e["field"] for e in errors[number]] == [field], suffix
        assert word in errors[number][0]["reason"], (suffix, errors[number])
    assert report["valid"] == len({r["patient_uid"] for r in rows})


def test_a_huge_integer_is_one_bad_line(tmp_path: Path, sample_csv: Path) -> None:
    """Python will not read an integer of more than 4,300 digits: a ValueError that escaped the reader."""
    rows = [typed(r) for r in read_rows(sample_csv)]
    line = _dumps(rows[0]).replace(b'"39000000"', b"9" * 5000, 1)
    source = tmp_path / "digits.jsonl"
    source.write_bytes(b"\n".join([*(_dumps(r) for r in rows), line]) + b"\n")
    report, entries = validated(source, tmp_path / "run")
    assert report["read"] == len(rows) + 1
    assert entries[-1]["row"] == len(rows) + 1 and entries[-1]["errors"][0]["field"] == "row"
    assert "too long" in entries[-1]["errors"][0]["reason"]


def test_garbage_in_the_age_says_what_was_expected(tmp_path: Path, sample_csv: Path) -> None:
    """ast's message showed a memory address: 'malformed node or string ... <ast.Name object at 0x7f...>'."""
    rows = read_rows(sample_csv)
    bad = [
        {**rows[0], "patient_uid": f"age-{i}", "age": age} for i, age in enumerate(["[[sixty, 'year']]", "{[1]: 2}"])
    ]
    source = tmp_path / "ages.csv"
    source.write_bytes(csv_bytes(rows + bad))
    _, entries = validated(source, tmp_path / "run")
    reasons = [e["errors"] for e in entries if e["uid"] in ("age-0", "age-1")]
    assert len(reasons) == 2
    for (error,) in reasons:
        assert error["field"] == "age" and "[[60.0, 'year']]" in error["reason"]
        assert "0x" not in error["reason"] and "ast" not in error["reason"]


def test_control_characters_are_dropped_from_the_text(tmp_path: Path, sample_csv: Path) -> None:
    """BEL and ESC sequences would be written as they are to terminals and pages; tab and line breaks stay."""
    rows = [typed(r) for r in read_rows(sample_csv)]
    uid = rows[0]["patient_uid"]
    rows[0] = {**rows[0], "title": "\x1b[2JA title\x07", "patient": rows[0]["patient"] + "\x1b[31m\tred\x9b\r\nend\x7f"}
    source = tmp_path / "controls.jsonl"
    source.write_bytes(b"\n".join(_dumps(r) for r in rows) + b"\n")
    run_dir = tmp_path / "run"
    report, _ = validated(source, run_dir)
    assert report["quarantined"] == 1  # the sample's duplicate only
    import pandas as pd

    records = pd.concat(pd.read_parquet(p) for p in sorted((run_dir / "records").glob("*.parquet")))
    record = records.set_index("uid").loc[uid]
    assert record["title"] == "[2JA title"
    assert record["text"].endswith("[31m\tred\r\nend")
