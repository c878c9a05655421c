"""The quality gate of patient_ingest in dag.test() runs: a better version publishes on its own; a
worse one waits in the human-in-the-loop task, answered through Airflow's own HITL REST API (an
in-process api app on the same metadata database), and is published only when approved."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patientinsight.index.factory import make_index
from patientinsight.settings import Settings, get_settings
from tests.helpers import scrambled


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    """Airflow's core REST API in process; every request is an admin (SimpleAuthManager all-admins)."""
    from airflow.api_fastapi.app import create_app
    from airflow.configuration import conf
    from fastapi.testclient import TestClient

    conf.set("core", "simple_auth_manager_all_admins", "True")
    try:
        with TestClient(create_app(apps="core")) as client:
            yield client
    finally:
        conf.remove_option("core", "simple_auth_manager_all_admins")


def run_answering(dag: Any, api: Any, conf: dict[str, Any], answer: str | None) -> tuple[Any, list[dict[str, Any]]]:
    """dag.test() here (task code needs the main thread); a thread answers the approval task through
    the HITL API once it waits."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    answered: list[dict[str, Any]] = []
    refused: list[str] = []  # answers not taken, and errors: asked again a second later
    done = threading.Event()

    def respond() -> None:
        # Until an answer is taken: a thread that stopped after a refused answer (or an error) would leave
        # dag.test() waiting for approval for ever (seen once in CI).
        while not done.is_set() and answer is not None and not answered:
            try:
                with create_session() as session:
                    query = session.query(DagRun).filter_by(dag_id="patient_ingest", state="running")
                    running = [r.run_id for r in query]
                for run_id in running:
                    path = f"/api/v2/dags/patient_ingest/dagRuns/{run_id}/taskInstances/approve_publish/-1/hitlDetails"
                    detail = api.get(path)
                    if detail.status_code == 200 and detail.json().get("response_received") is False:
                        held = sorted(make_index(get_settings()).versions.holds.held())  # while it waits
                        response = api.patch(path, json={"chosen_options": [answer], "params_input": {}})
                        if response.status_code == 200:
                            answered.append({"run_id": run_id, "detail": detail.json(), "status": 200, "held": held})
                        else:
                            refused.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except Exception as exc:  # e.g. the metadata database busy: ask again
                refused.append(repr(exc)[:200])
            time.sleep(1)

    responder = threading.Thread(target=respond, daemon=True)
    responder.start()
    try:
        dag_run = dag.test(run_conf=conf)
    finally:
        done.set()
        responder.join(timeout=30)
    assert answer is None or answered, refused
    return dag_run, answered


def report_of(settings: Settings, dag_run: Any) -> dict[str, Any]:
    import json

    from patientinsight.ingest.lake import run_key

    return json.loads((settings.runs_dir / run_key(dag_run.run_id) / "report.json").read_text())


@pytest.mark.parametrize("answer", ["Approve", "Reject"])
def test_worse_version_waits_for_a_person(
    dag: Any, api: Any, home: Settings, sample_csv: Path, tmp_path: Path, answer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sample has 20 holdout queries: let the gate judge on them (it needs 30 by default).
    monkeypatch.setenv("PATIENTINSIGHT_GATE_MIN_QUERIES", "10")
    get_settings.cache_clear()
    first, asked = run_answering(dag, api, {"source_uri": str(sample_csv)}, answer=None)
    assert first.state == "success" and asked == []  # nothing to compare with: published on its own
    published = make_index(home).published()
    assert report_of(home, first)["gate"]["needs_approval"] is False

    worse = scrambled(sample_csv, tmp_path / "scrambled.csv")
    dag_run, asked = run_answering(dag, api, {"source_uri": str(worse)}, answer=answer)
    assert dag_run.state == "success"
    assert len(asked) == 1 and "MRR fell" in asked[0]["detail"]["body"]
    report = report_of(home, dag_run)
    assert report["gate"]["needs_approval"] is True
    index = make_index(home)
    # Held from pruning while it waited for the answer; released once answered, either way.
    assert asked[0]["held"] == [report["staged_version"]] and index.versions.holds.held() == set()
    if answer == "Approve":
        assert report["published"] and index.published() == report["staged_version"] != published
    else:
        assert not report["published"] and index.published() == published
