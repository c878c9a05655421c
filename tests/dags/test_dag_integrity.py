"""Every DAG file imports cleanly and follows the project's rules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def dagbag(repo_root: Path):  # type: ignore[no-untyped-def]
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(repo_root / "dags"))


def test_no_import_errors(dagbag) -> None:  # type: ignore[no-untyped-def]
    assert dagbag.import_errors == {}
    assert "patient_ingest" in dagbag.dags


def test_every_dag_has_tags_retries_and_a_failure_callback(dagbag) -> None:  # type: ignore[no-untyped-def]
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id}"
            assert task.on_failure_callback, f"{dag_id}.{task.task_id}"


def test_every_dag_has_a_one_line_description(dagbag) -> None:  # type: ignore[no-untyped-def]
    """What the DAG list shows under each name (the REST API's `description`)."""
    assert len(dagbag.dags) == 4
    for dag_id, dag in dagbag.dags.items():
        assert dag.description and "\n" not in dag.description, dag_id
        assert 20 <= len(dag.description) <= 120, (dag_id, dag.description)


def test_plugin_adds_the_mlflow_link() -> None:
    from airflow import plugins_manager

    names = {link.name for link in plugins_manager.get_global_operator_extra_links()}
    assert "MLflow run" in names
