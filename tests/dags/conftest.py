from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from patientinsight.settings import Settings, get_settings


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    """A migrated metadata database (SQLite in the session's Airflow home) for dag.test()."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A fresh PATIENTINSIGHT_HOME for one test; the DAG's tasks read it through get_settings()."""
    monkeypatch.setenv("PATIENTINSIGHT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def dag(repo_root: Path):  # type: ignore[no-untyped-def]
    """patient_ingest, parsed from its file."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(repo_root / "dags" / "patient_ingest.py")).dags["patient_ingest"]
