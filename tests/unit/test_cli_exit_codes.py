"""`patientinsight ingest` exit codes, from the installed command in a process of its own: a version the
quality gate holds back exits 3 with the reason on stderr, distinct from success (0) and failure (1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from patientinsight.cli import EXIT_ERROR, EXIT_HELD, EXIT_OK
from tests.helpers import scrambled


def patientinsight(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("patientinsight")  # the installed console script
    env = {
        **os.environ,
        "PATIENTINSIGHT_HOME": str(home),
        "PATIENTINSIGHT_GATE_MIN_QUERIES": "10",  # judge on the sample's 20 shared queries
    }
    return subprocess.run([str(command), *args], env=env, capture_output=True, text=True, timeout=600, check=False)


def test_a_held_version_exits_3_saying_why(sample_csv: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = patientinsight(home, "ingest", str(sample_csv), "--json")
    assert first.returncode == EXIT_OK, first.stderr
    published = json.loads(first.stdout)["index_version"]

    worse = scrambled(sample_csv, tmp_path / "scrambled.csv")
    held = patientinsight(home, "ingest", str(worse), "--full-refresh", "--json")
    assert held.returncode == EXIT_HELD == 3, held.stderr
    report = json.loads(held.stdout)  # the report is still printed
    assert not report["published"] and report["index_version"] == published != report["staged_version"]
    [line] = [line for line in held.stderr.splitlines() if "held back by the quality gate" in line]
    assert report["staged_version"] in line and f"{published} stays published" in line
    assert "MRR fell" in line and "exit code 3" in line
    # (--allow-worse would publish it: tests/unit/ingest/test_ingest_run.py covers that path.)

    missing = patientinsight(home, "ingest", str(tmp_path / "missing.csv"))
    assert missing.returncode == EXIT_ERROR


def test_ingest_help_documents_the_exit_codes(tmp_path: Path) -> None:
    result = patientinsight(tmp_path / "home", "ingest", "--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    assert "  3  held back: the quality gate did not publish the new version" in result.stdout
