"""`patientinsight query --json` prints the API's JSON for the same query."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.serving.service import Service

QUERY = "Periumbilical pain migrating to the right iliac fossa, with anorexia"


def test_cli_query_prints_the_same_json_as_the_api(built_home: Path, dev_service: Service) -> None:
    env = {**os.environ, "PATIENTINSIGHT_HOME": str(built_home), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "patientinsight.cli", "query", QUERY, "-k", "3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    from_cli = json.loads(done.stdout)
    with dev_service.client() as client:
        from_api = client.post("/v1/query", json={"text": QUERY, "k": 3}).json()
    assert set(from_cli) == set(from_api)
    assert from_cli["cases"] == from_api["cases"]
    assert from_cli["analysis"] == from_api["analysis"]
    assert from_cli["index_version"] == from_api["index_version"]
    assert "appendicitis" in from_cli["cases"][0]["title"].lower()
    assert QUERY not in done.stderr  # the command line logs no query text either
