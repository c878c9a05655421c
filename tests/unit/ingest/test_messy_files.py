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
