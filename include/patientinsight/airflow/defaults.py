"""What every PatientInsight DAG shares, in one place: it runs on demand (a person, the S3 trigger or
CI), never backfills, runs once at a time, and every task is retried twice and reports its failure.
No Airflow import: the DAG files pass the result to `@dag(**...)`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

START_DATE = datetime(2026, 1, 1)


def dag_arguments(
    dag_id: str,
    *,
    owner: str,
    tags: list[str],
    doc_md: str | None,
    on_failure: Callable[[Any], None],
    retry_delay: timedelta,
    exponential_backoff: bool = False,
) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
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
