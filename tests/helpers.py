"""Small helpers shared by tests: edited copies of the sample, and MLflow read-back."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def changed_and_removed(sample: Path, out: Path) -> tuple[Path, str, str]:
    """The sample with one record's text changed and another record removed: (path, changed, removed)."""
    rows = read_rows(sample)
    changed, removed = rows[0]["patient_uid"], rows[1]["patient_uid"]
    rows[0] = {**rows[0], "patient": rows[0]["patient"] + " A follow-up visit a year later was normal."}
    rows = [r for r in rows if r["patient_uid"] != removed]
    return write_rows(out, rows), changed, removed


def mlflow_run(tracking_uri: str, run_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
