"""Shared helpers of the benchmark scripts: the real records, the machine line."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from patientinsight.ingest.sources import read_chunks
from patientinsight.ingest.validation import validate_chunk

DATA_DIR = Path(os.environ.get("PATIENTINSIGHT_REAL_DATA", "../shared/data/pmc-patients"))
REAL_CSV = DATA_DIR / "PMC-Patients-sample-1000.csv"


def real_records(path: Path = REAL_CSV) -> pd.DataFrame:
    """The real records, normalized and validated exactly as the pipeline does."""
    if not path.exists():
        raise SystemExit(f"{path} not found: set PATIENTINSIGHT_REAL_DATA to the folder of PMC-Patients files")
    seen: set[str] = set()
    frames = [validate_chunk(chunk, str(path), seen).valid for chunk in read_chunks(str(path), 5000)]
    return pd.concat(frames, ignore_index=True)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.node() or 'host'}: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
