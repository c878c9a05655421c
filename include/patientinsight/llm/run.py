"""The llm_endpoint DAG's own steps as plain functions: plan one deployment and open its MLflow run,
register scaling, close the run with the endpoint's record. No Airflow import."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from patientinsight.llm import autoscaling
from patientinsight.llm.endpoint import endpoint_name_for, plan_deployment, write_record
from patientinsight.llm.tgi_image import tgi_image_uri
from patientinsight.settings import Settings
from patientinsight.tracking import LINK_XCOM_KEY, TrackedRun

log = logging.getLogger(__name__)

State = dict[str, Any]


def begin(settings: Settings, dag_id: str, run_id: str, params: dict[str, Any], region: str, at: datetime) -> State:
    """Resolve the form (endpoint name, role and image fall back to settings and the region's TGI image),
    validate it, and open (or, on a retry, find) the deployment's MLflow run."""
    endpoint_name = endpoint_name_for(settings, params.get("endpoint_name"))
    image_uri = params.get("image_uri") or tgi_image_uri(region, str(params["tgi_version"]))
    plan = plan_deployment(
        params,
        endpoint_name=endpoint_name,
        role_arn=params.get("execution_role") or settings.sagemaker_execution_role_arn,
        image_uri=image_uri,
        run_id=run_id,
        at=at,
    )
    tracked = TrackedRun.open(
        settings.tracking_uri,
        settings.llm_mlflow_experiment,
        run_id,
        dag_id,
        run_name=f"{endpoint_name}-{plan['deployment']}",
        tags={"sagemaker.endpoint": endpoint_name},
    )
    scaling = plan["autoscaling"] or {}
    tracked.log_params(
        {
            "model_id": plan["environment"]["HF_MODEL_ID"],
            "instance_type": plan["instance_type"],
            "initial_instance_count": plan["initial_instance_count"],
            "image_uri": image_uri,
            "tgi_version": "custom image" if params.get("image_uri") else params["tgi_version"],
            **{f"env.{k}": v for k, v in plan["environment"].items()},
            "endpoint_name": endpoint_name,
            "model_name": plan["model_name"],
            "endpoint_config_name": plan["endpoint_config_name"],
            "region": region,
            "autoscaling_min_instances": scaling.get("min"),
            "autoscaling_max_instances": scaling.get("max"),
            "autoscaling_target_invocations": scaling.get("target"),
        },
    )
    log.info("deployment %s of %s planned (MLflow run %s)", plan["deployment"], endpoint_name, tracked.run_id)
    return {
        **plan,
        "region": region,
        "airflow_run_id": run_id,
        "mlflow_run_id": tracked.run_id,
        LINK_XCOM_KEY: tracked.url(settings.mlflow_ui_url),
        "started_at": time.time(),
    }


def autoscale(client: Any, state: State) -> dict[str, Any] | None:
    """Register target tracking when the form set a range; otherwise the endpoint keeps its fixed count
    (an update already deregistered any earlier scaling)."""
    scaling = state["autoscaling"]
    if not scaling:
        log.info(
            "no autoscaling range: %s keeps %d instance(s)", state["endpoint_name"], state["initial_instance_count"]
        )
        return None
    return autoscaling.register(client, state["endpoint_name"], scaling["min"], scaling["max"], scaling["target"])


def finish(
    settings: Settings, state: State, deployed: dict[str, Any], scaling: dict[str, Any] | None, smoke: dict[str, Any]
) -> dict[str, Any]:
    """Record the live deployment where serving reads it, attach it to the MLflow run and close the run."""
    record = {
        "endpoint_name": state["endpoint_name"],
        "endpoint_arn": deployed["endpoint_arn"],
        "endpoint_config_name": deployed["endpoint_config_name"],
        "model_name": state["model_name"],
        "model_id": state["environment"]["HF_MODEL_ID"],
        "image_uri": state["image_uri"],
        "environment": state["environment"],
        "instance_type": state["instance_type"],
        "initial_instance_count": state["initial_instance_count"],
        "autoscaling": scaling,
        "region": state["region"],
        "deployment": state["deployment"],
        "deployed_at": datetime.now(UTC).isoformat(),
        "airflow_run_id": state["airflow_run_id"],
        "mlflow_run_id": state["mlflow_run_id"],
        "smoke_latency_seconds": smoke["latency_seconds"],
    }
    path = write_record(settings, record)
    tracked = TrackedRun(settings.tracking_uri, state["mlflow_run_id"])
    tracked.log_params({"endpoint_arn": deployed["endpoint_arn"], "deploy_action": deployed["action"]})
    tracked.log_metrics(
        {
            "deploy_seconds": deployed["deploy_seconds"],
            "smoke_latency_seconds": smoke["latency_seconds"],
            "smoke_answer_chars": smoke["answer_chars"],
            "total_seconds": time.time() - state["started_at"],
        },
    )
    tracked.log_artifacts([path], folder="endpoint")
    tracked.finish()
    log.info("endpoint %s now serves %s; record %s", state["endpoint_name"], deployed["endpoint_config_name"], path)
    return {**record, "record_path": str(path)}


def fail(settings: Settings, state: State | None, message: str | None) -> None:
    """Mark the deployment's MLflow run FAILED with the reason (SageMaker's or the smoke test's)."""
    if state:  # None: the form was refused before a run was opened
        TrackedRun(settings.tracking_uri, state["mlflow_run_id"]).fail(message)
