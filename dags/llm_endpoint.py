"""
### llm_endpoint

Deploys OpenBioLLM (or any Hugging Face model id) on the Hugging Face TGI container to a SageMaker
real-time endpoint: a model and an endpoint config with names unique to this deployment, then the
endpoint created if missing or updated if live (SageMaker's blue/green update: the old fleet serves
until the new one is healthy), waited on until InService. A Failed endpoint fails the run with
SageMaker's FailureReason. With an autoscaling range, a target-tracking policy on invocations per
instance. Then one smoke-test invocation (a fixed textbook question; its latency is recorded).

One MLflow run per deployment (experiment `PATIENTINSIGHT_LLM_MLFLOW_EXPERIMENT`). The live deployment
is described in `PATIENTINSIGHT_HOME/llm_endpoints/<endpoint name>.json`; serving calls the endpoint
named by `PATIENTINSIGHT_SAGEMAKER_ENDPOINT_NAME`. AWS credentials and region: the Airflow connection
`PATIENTINSIGHT_AWS_CONN_ID`. The GPU bills by the hour while the endpoint exists: delete it with the
DAG `llm_endpoint_teardown`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from patientinsight.airflow.defaults import dag_arguments, share_mlflow_link
from patientinsight.airflow.sagemaker import (
    CreateEndpointConfigOnceOperator,
    CreateModelOnceOperator,
    CreateOrUpdateEndpointOperator,
)
from patientinsight.llm import run as llm_run
from patientinsight.llm import smoke
from patientinsight.llm.endpoint import DEFAULT_ENDPOINT_NAME, DeploymentError
from patientinsight.llm.tgi_image import DEFAULT_TGI_VERSION, ImageLookupError, tgi_versions
from patientinsight.settings import get_settings

SETTINGS = get_settings()


def _client(service: str) -> Any:
    """A boto3 client from the Airflow aws connection (credentials, region, endpoint_url)."""
    return AwsBaseHook(aws_conn_id=get_settings().aws_conn_id, client_type=service).conn


def _on_failure(context: Any) -> None:
    """Close the deployment's MLflow run as FAILED, with the reason."""
    exception = context.get("exception")
    llm_run.fail(get_settings(), context["ti"].xcom_pull(task_ids="plan"), str(exception) if exception else None)


# One run at a time: two deployments of one endpoint at once would race on UpdateEndpoint.
@dag(
    **dag_arguments(
        "llm_endpoint",
        description="Deploy OpenBioLLM (Hugging Face TGI) as a SageMaker endpoint, smoke-test it, log it to MLflow",
        owner="ml-engineering",
        tags=["llm", "sagemaker"],
        doc_md=__doc__,
        on_failure=_on_failure,
        retry_delay=timedelta(seconds=60),
        exponential_backoff=True,
    ),
    params={
        "model_id": Param(
            "aaditya/Llama3-OpenBioLLM-8B",
            type="string",
            minLength=1,
            title="Model id",
            description="Hugging Face model id the TGI container downloads (HF_MODEL_ID).",
        ),
        "instance_type": Param(
            "ml.g5.2xlarge",
            type="string",
            pattern=r"^ml\.",
            title="Instance type",
            description="SageMaker instance type (ml.g5.2xlarge: one A10G with 24 GB, enough for 8B in bf16).",
        ),
        "initial_instance_count": Param(1, type="integer", minimum=1, title="Initial instance count"),
        "tgi_version": Param(
            DEFAULT_TGI_VERSION,
            type="string",
            enum=tgi_versions(),
            title="TGI version",
            description="Picks the TGI image for the connection's region (ignored when an image URI is given).",
        ),
        "image_uri": Param(
            None,
            type=["null", "string"],
            title="TGI image URI",
            description="Empty: the Hugging Face TGI image of the TGI version for the region.",
        ),
        "sm_num_gpus": Param(1, type="integer", minimum=1, title="SM_NUM_GPUS", description="GPUs per instance."),
        "max_input_length": Param(3072, type="integer", minimum=1, title="MAX_INPUT_LENGTH (tokens)"),
        "max_total_tokens": Param(4096, type="integer", minimum=2, title="MAX_TOTAL_TOKENS (tokens)"),
        "endpoint_name": Param(
            None,
            type=["null", "string"],
            title="Endpoint name",
            description=f"Empty: PATIENTINSIGHT_SAGEMAKER_ENDPOINT_NAME (what serving calls), else "
            f"{DEFAULT_ENDPOINT_NAME}.",
        ),
        "execution_role": Param(
            None,
            type=["null", "string"],
            title="Execution role ARN",
            description="Empty: PATIENTINSIGHT_SAGEMAKER_EXECUTION_ROLE_ARN.",
        ),
        "autoscaling_min_instances": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Autoscaling: min instances",
            description="With the max: register target tracking; both empty: a fixed instance count.",
        ),
        "autoscaling_max_instances": Param(None, type=["null", "integer"], minimum=1, title="Autoscaling: max"),
        "autoscaling_target_invocations": Param(
            20.0,
            type="number",
            exclusiveMinimum=0,
            title="Autoscaling: target invocations per instance",
            description="SageMakerVariantInvocationsPerInstance (per minute) that target tracking holds.",
        ),
    },
)
def llm_endpoint() -> None:
    @task(multiple_outputs=True)
    def plan() -> dict[str, Any]:
        context = get_current_context()
        hook = AwsBaseHook(aws_conn_id=get_settings().aws_conn_id, client_type="sagemaker")
        if not hook.conn_region_name:
            raise AirflowFailException("the aws connection has no region_name")
        try:
            state = llm_run.begin(
                get_settings(), context["dag"].dag_id, context["run_id"], dict(context["params"]),
                hook.conn_region_name, context["dag_run"].run_after,
            )  # fmt: skip
        except (DeploymentError, ImageLookupError) as exc:
            raise AirflowFailException(str(exc)) from exc  # the same form fails the same way: no retry
        share_mlflow_link(context, state)
        return state

    planned = plan()
    model = CreateModelOnceOperator(task_id="create_model", config=planned["model"], aws_conn_id=SETTINGS.aws_conn_id)
    config = CreateEndpointConfigOnceOperator(
        task_id="create_endpoint_config", config=planned["endpoint_config"], aws_conn_id=SETTINGS.aws_conn_id
    )
    deploy = CreateOrUpdateEndpointOperator(
        task_id="deploy_endpoint",
        config=planned["endpoint"],
        aws_conn_id=SETTINGS.aws_conn_id,
        deferrable=SETTINGS.sagemaker_deferrable,
        check_interval=30,
        max_ingestion_time=3600,
    )

    @task
    def autoscale(state: dict[str, Any], deployed: dict[str, Any]) -> dict[str, Any] | None:
        return llm_run.autoscale(_client("application-autoscaling"), state)

    @task
    def smoke_test(state: dict[str, Any], deployed: dict[str, Any]) -> dict[str, Any]:
        try:
            return smoke.run(_client("sagemaker-runtime"), state["endpoint_name"])
        except smoke.SmokeTestFailed as exc:
            raise AirflowFailException(str(exc)) from exc  # a wrong answer shape is the deployment's, not luck

    @task
    def finish(
        state: dict[str, Any], deployed: dict[str, Any], scaling: dict[str, Any] | None, smoke: dict[str, Any]
    ) -> dict[str, Any]:
        return llm_run.finish(get_settings(), state, deployed, scaling, smoke)

    planned >> model >> config >> deploy
    scaled = autoscale(planned, deploy.output)
    smoked = smoke_test(planned, deploy.output)
    finish(planned, deploy.output, scaled, smoked)


llm_endpoint()
