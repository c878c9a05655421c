"""What every PatientInsight DAG shares, in one place: it runs on demand (a person, the S3 trigger or
CI), never backfills, runs once at a time, every task is retried twice and reports its failure, and the
task that opens the run's MLflow run shares its link. No Airflow import: the DAG files pass
`dag_arguments` to `@dag`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from patientinsight.tracking import LINK_XCOM_KEY

START_DATE = datetime(2026, 1, 1)


def dag_arguments(
    dag_id: str,
    *,
    description: str,
    owner: str,
    tags: list[str],
    doc_md: str | None,
    on_failure: Callable[[Any], None],
    retry_delay: timedelta,
    exponential_backoff: bool = False,
) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "description": description,  # the one line the DAG list and the REST API show
        "schedule": None,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["patientinsight", *tags],
        "doc_md": doc_md,
        "default_args": {
            "owner": owner,
            "retries": 2,
            "retry_delay": retry_delay,
            "retry_exponential_backoff": exponential_backoff,
            "on_failure_callback": on_failure,
        },
    }


def share_mlflow_link(context: Any, state: dict[str, Any]) -> None:
    """Called once per DAG run, by the task that opened the MLflow run: leave the run's address where the
    link of plugins/mlflow_link.py finds it for every task of the run."""
    context["ti"].xcom_push(key=LINK_XCOM_KEY, value=state[LINK_XCOM_KEY])
