"""An Airflow plugin: every task instance of a PatientInsight run links to its MLflow run.

The address is in one place: the XCom `LINK_XCOM_KEY` that the run's first task leaves when it opens
the MLflow run (patientinsight.tracking). The link runs in the API server, so it reads that XCom for
the whole DAG run from the metadata database, as Airflow's own XCom API does (a custom XCom backend's
offloading is for large values; an address stays in the table); tasks of runs without one get ''."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from patientinsight.tracking import LINK_XCOM_KEY


class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        query = XComModel.get_many(run_id=ti_key.run_id, dag_ids=ti_key.dag_id, key=LINK_XCOM_KEY, limit=1)
        with create_session() as session:
            row = session.scalars(query).first()
            url = XComModel.deserialize_value(row) if row is not None else None
        return str(url) if url else ""


class PatientInsightPlugin(AirflowPlugin):
    name = "patientinsight"
    global_operator_extra_links: ClassVar[list[Any]] = [MlflowRunLink()]
