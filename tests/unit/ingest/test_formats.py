"""ingest/formats.py: the one table of source formats, that the reader and the help texts follow."""

from __future__ import annotations

from patientinsight.ingest import sources
from patientinsight.ingest.formats import FORMATS, described, format_of, trigger_suffixes


def test_every_suffix_has_a_reader_and_every_reader_a_suffix() -> None:
    assert set(FORMATS.values()) == set(sources._READERS)


def test_format_of_ignores_gzip_case_and_query() -> None:
    assert format_of("s3://b/K/A.NDJSON.gz?versionId=1") == "jsonl"
    assert format_of("a.parquet") is None and format_of("a.gz") is None


def test_the_trigger_and_the_help_name_every_suffix() -> None:
    assert trigger_suffixes() == (".csv", ".json", ".jsonl", ".ndjson", ".gz")
    assert described() == ".csv, .json, .jsonl, .ndjson (optionally .gz)"
