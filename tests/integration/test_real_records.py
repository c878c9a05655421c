"""The real PMC-Patients records in ../shared/data/pmc-patients (skipped where that folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from patientinsight.embedding.encoder import make_embedder
from patientinsight.index.factory import make_index
from patientinsight.ingest.run import run_ingest
from patientinsight.ingest.sources import read_chunks
from patientinsight.ingest.validation import validate_chunk
from patientinsight.retrieval.passages import first_sentences
from patientinsight.settings import Settings

pytestmark = pytest.mark.realdata


def validated(path: Path) -> tuple[pd.DataFrame, int]:
    seen: set[str] = set()
    frames, quarantined = [], 0
    for chunk in read_chunks(str(path), 300):
        result = validate_chunk(chunk, str(path), seen)
        frames.append(result.valid)
        quarantined += len(result.quarantined)
    return pd.concat(frames, ignore_index=True), quarantined


def test_csv_and_json_exports_normalize_to_the_same_records(real_data_dir: Path) -> None:
    from_csv, bad_csv = validated(real_data_dir / "PMC-Patients-sample-1000.csv")
    from_json, bad_json = validated(real_data_dir / "PMC-Patients-sample-1000.json")
    assert len(from_csv) + bad_csv == 1000 == len(from_json) + bad_json
    assert from_csv["content_hash"].tolist() == from_json["content_hash"].tolist()
    assert from_csv["age_years"].notna().all()
    assert set(from_csv["sex"]) == {"M", "F"}


def test_ingest_real_records(real_data_dir: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    source = real_data_dir / "PMC-Patients-sample-200.json"  # has an extra `prompt` key: ignored
    report = run_ingest(str(source), settings, run_id="real")
    assert report["read"] == 200 == report["indexed"] + report["quarantined"]
    assert report["quarantined"] <= 10
    reader = make_index(settings).open(report["index_version"])
    records = reader.records([h for h in list(reader.hashes())[:20]])
    embedder = make_embedder(settings)
    found = 0
    for row in records.itertuples():
        hits = reader.search(embedder.embed_query(first_sentences(row.text)), 10)
        found += row.uid in [h.uid for h in hits]
    assert found >= 15  # a summary's own opening finds it in the top 10 for most records
