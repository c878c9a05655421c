"""Load airflow_settings.yaml (the Astro CLI's format) into an Airflow metadata database, through
Airflow's own import commands: `python -m patientinsight.airflow.astro_settings airflow_settings.yaml`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)


def to_import_files(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Astro's lists -> the JSON mappings that `airflow connections|variables|pools import` read."""
    section = settings.get("airflow") or {}
    connections = {
        c["conn_id"]: {
            "conn_type": c["conn_type"],
            "host": c.get("conn_host"),
            "schema": c.get("conn_schema"),
            "login": c.get("conn_login"),
            "password": c.get("conn_password"),
            "port": c.get("conn_port"),
            "extra": json.dumps(c["conn_extra"]) if isinstance(c.get("conn_extra"), dict) else c.get("conn_extra"),
        }
        for c in section.get("connections") or []
    }
    variables = {v["variable_name"]: v["variable_value"] for v in section.get("variables") or []}
    pools = {
        p["pool_name"]: {"slots": int(p["pool_slot"]), "description": p.get("pool_description", "")}
        for p in section.get("pools") or []
    }
    return {"connections": connections, "variables": variables, "pools": pools}


def load(path: Path, airflow: str = "airflow") -> dict[str, int]:
    files = to_import_files(yaml.safe_load(path.read_text()) or {})
    extra_args = {"connections": ["--overwrite"], "variables": [], "pools": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, payload in files.items():
            if not payload:
                continue
            target = Path(tmp) / f"{kind}.json"
            target.write_text(json.dumps(payload))
            subprocess.run([airflow, kind, "import", str(target), *extra_args[kind]], check=True)
    return {kind: len(payload) for kind, payload in files.items()}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    counts = load(Path(sys.argv[1] if len(sys.argv) > 1 else "airflow_settings.yaml"))
    log.info("loaded %s", counts)
