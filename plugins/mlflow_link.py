"""An Airflow plugin: every task instance of a PatientInsight run links to its MLflow run."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink


class MlflowRunLink(BaseOperatorLink):
    """The task pushes its MLflow run's address as XCom `mlflow_run_url`; tasks without one get ''."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.providers.common.compat.sdk import XCom

        url = XCom.get_value(ti_key=ti_key, key="mlflow_run_url")
        return str(url) if url else ""


class PatientInsightPlugin(AirflowPlugin):
    name = "patientinsight"
    global_operator_extra_links: ClassVar[list[Any]] = [MlflowRunLink()]
