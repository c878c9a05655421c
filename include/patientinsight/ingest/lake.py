"""A run's folder in the lake: its name, the JSON files the steps leave there, and their timing.

Steps pass paths, never data: each reads what the previous one wrote under the run folder.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def run_key(run_id: str) -> str:
    """A folder name from an Airflow run id (which may hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def record_parts(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "records").glob("part-*.parquet"))


@dataclass
class Timer:
    started: float = 0.0

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


REPORT_FILES = (
    "validation.json",
    "quarantine.jsonl",
    "profile.html",
    "profile.json",
    "plan.json",
    "shards.json",
    "report.json",
)


def report_files(run_dir: Path) -> list[Path]:
    """The reports a run leaves in its folder, in the order a reader wants them."""
    return [run_dir / name for name in REPORT_FILES]
