"""
### llm_endpoint_teardown

Deletes the SageMaker endpoint that `llm_endpoint` deployed, then its endpoint configs and models and
its autoscaling target, so an idle GPU endpoint stops billing. Deleting an endpoint that is already
gone is not an error. The endpoint's record in `PATIENTINSIGHT_HOME/llm_endpoints/` is removed, so
nothing points at a deleted endpoint.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.sdk import Param, dag, get_current_context, task

from patientinsight.airflow.defaults import dag_arguments
from patientinsight.llm.endpoint import DEFAULT_ENDPOINT_NAME, endpoint_name_for, remove_record
from patientinsight.llm.teardown import teardown
from patientinsight.settings import get_settings

log = logging.getLogger(__name__)


def _on_failure(context: Any) -> None:
    log.error("teardown of %s failed; the endpoint may still bill", context["params"].get("endpoint_name"))


@dag(
    **dag_arguments(
        "llm_endpoint_teardown",
        description="Delete the SageMaker LLM endpoint, its configs, models and autoscaling: an idle GPU stops billing",
        owner="ml-engineering",
        tags=["llm", "sagemaker"],
        doc_md=__doc__,
        on_failure=_on_failure,
        retry_delay=timedelta(seconds=60),
    ),
    params={
        "endpoint_name": Param(
            None,
            type=["null", "string"],
            title="Endpoint name",
            description=f"Empty: PATIENTINSIGHT_SAGEMAKER_ENDPOINT_NAME, else {DEFAULT_ENDPOINT_NAME}.",
        ),
        "delete_models": Param(True, type="boolean", title="Delete the models too"),
    },
)
def llm_endpoint_teardown() -> None:
    @task
    def delete_endpoint() -> dict[str, Any]:
        params = get_current_context()["params"]
        settings = get_settings()
        name = endpoint_name_for(settings, params.get("endpoint_name"))

        def client(service: str) -> Any:
            return AwsBaseHook(aws_conn_id=settings.aws_conn_id, client_type=service).conn

        result = teardown(
            client("sagemaker"), client("application-autoscaling"), name, delete_models=bool(params["delete_models"])
        )
        result["record_removed"] = remove_record(settings, name)
        return result

    delete_endpoint()


llm_endpoint_teardown()
