"""A file that cannot be read says which file, what is wrong and what to do (issue 16, item 5), and a
file in another encoding names the option that reads it."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from patientinsight.ingest.run import run_ingest
from patientinsight.ingest.sources import SourceError, read_chunks
from patientinsight.settings import Settings

HEADER = "patient_uid,PMID,title,patient,age,gender,similar_patients,relevant_articles\n"
ROW = "{uid},1,{title},This 60-year-old patient presented with fever,\"[[60.0, 'year']]\",M,{{}},{{}}\n"
CSV = (HEADER + "".join(ROW.format(uid=f"1-{i}", title="A title") for i in range(3))).encode()


def rows(uri: str, **kwargs: object) -> list[dict]:
    return [row for chunk in read_chunks(uri, 100, **kwargs) for row in chunk.rows]  # type: ignore[arg-type]


def error(uri: str, **kwargs: object) -> str:
    with pytest.raises(SourceError) as caught:
        rows(uri, **kwargs)
    message = str(caught.value)
    assert message.startswith(f"{uri}: "), message  # the file, first
    return message


def test_an_empty_file(tmp_path: Path) -> None:
    for name in ("empty.csv", "empty.json", "empty.jsonl"):
        (tmp_path / name).write_bytes(b"")
        message = error(str(tmp_path / name))
        assert "the file is empty (0 bytes)" in message and "upload the complete export" in message
    (tmp_path / "empty.csv.gz").write_bytes(gzip.compress(b""))
    assert "empty (0 bytes after gunzip)" in error(str(tmp_path / "empty.csv.gz"))


def test_a_blank_csv_has_no_header(tmp_path: Path) -> None:
    (tmp_path / "blank.csv").write_bytes(b"\n \n\n")
    message = error(str(tmp_path / "blank.csv"))
    assert "no header row" in message and "No columns to parse" not in message and "upload" in message


def test_a_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(CSV)[:-20])
    message = error(str(path))
    assert "ends early: the file is truncated" in message and "upload the complete file again" in message


def test_a_gz_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv.gz"
    path.write_bytes(CSV)
    message = error(str(path))
    assert "not gzip data" in message and "compress it with gzip or drop .gz" in message


def test_a_corrupt_gzip(tmp_path: Path) -> None:
    data = bytearray(gzip.compress(CSV))
    data[-8] ^= 0xFF  # the CRC of the trailer
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(data))
    message = error(str(path))
    assert "the gzip data is corrupt" in message and "upload the file again" in message


def test_a_json_array_names_the_broken_record(tmp_path: Path) -> None:
    records = [{"patient_uid": f"1-{i}", "PMID": "1", "title": "t", "patient": "x", "age": None, "gender": "F"}
               for i in range(3)]  # fmt: skip
    data = json.dumps(records).encode().replace(b'"1-2"', b'"1-\xff2"')
    path = tmp_path / "broken.json"
    path.write_bytes(data)
    message = error(str(path))
    assert "at record 3" in message and "export JSON Lines" in message and "--encoding" in message
    assert "1-" not in message  # no text from the file (yajl's message quotes it)


def test_a_file_in_latin_1(tmp_path: Path) -> None:
    """Read as utf-8, a latin-1 file fails, naming the option; with it, it reads."""
    text = HEADER + "".join(ROW.format(uid=f"1-{i}", title="Fièvre à São Paulo") for i in range(3))
    path = tmp_path / "latin1.csv"
    path.write_bytes(text.encode("latin-1"))
    message = error(str(path))
    assert "does not look like utf-8" in message and "latin-1, cp1252" in message
    assert "--encoding" in message and "PATIENTINSIGHT_SOURCE_ENCODING" in message
    assert [r["title"] for r in rows(str(path), encoding="latin-1")] == ["Fièvre à São Paulo"] * 3


def test_an_unknown_encoding(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(CSV)
    message = error(str(tmp_path / "a.csv"), encoding="utf-9")
    assert "unknown encoding 'utf-9'" in message and "--encoding" in message


def test_the_command_line_path_names_the_file(tmp_path: Path) -> None:
    """run_ingest (the CLI's) fails with the same error, not pandas' EmptyDataError."""
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.csv: the file is empty"):
        run_ingest(str(path), Settings(home=tmp_path / "home"), run_id="empty")


# -------------------------------------------------------------------------------------- S3, no credentials
BUCKET = "patientinsight-intake"


@pytest.fixture(scope="module")
def moto_s3(moto_url: str) -> str:
    """The real moto server with one CSV in the intake bucket, written with moto's dummy keys."""
    import boto3

    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto's dummy keys
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", **keys)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="intake/a.csv", Body=CSV)
    return moto_url


def test_s3_without_credentials_names_the_connection(
    moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    # No shared files, no instance metadata: botocore finds no credentials anywhere.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = f"s3://{BUCKET}/intake/a.csv"
    endpoint = {"client_kwargs": {"endpoint_url": moto_s3, "region_name": "us-east-1"}, "skip_instance_cache": True}

    # The same object, with the keys an Airflow connection hands over, reads...
    assert len(rows(uri, storage_options={**endpoint, "key": "testing", "secret": "testing"})) == 3
    # ...and without any, fails naming the connection to configure and the variables to set.
    message = error(uri, storage_options=endpoint)
    assert "no AWS credentials" in message and "Airflow connection 'aws_default'" in message
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "PATIENTINSIGHT_AWS_CONN_ID" in message
