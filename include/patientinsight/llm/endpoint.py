"""What one deployment of the LLM endpoint is: the request configs for SageMaker (model, endpoint config,
endpoint) with names unique per deployment, the create-or-update decision, and the record of the live
deployment in PATIENTINSIGHT_HOME/llm_endpoints/ (what was deployed, for people and the teardown). No
Airflow import."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from patientinsight.settings import Settings

VARIANT = "AllTraffic"
DEFAULT_ENDPOINT_NAME = "patientinsight-openbiollm"
TAG_ENDPOINT = "patientinsight:endpoint"
TAG_DEPLOYMENT = "patientinsight:deployment"
# SageMaker names: letters, digits and single hyphens, at most 63 characters.
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_BASE_CHARS = 40  # leaves room for "-<14-digit stamp>-<6 hex>" within 63
_DEPLOYMENT_SUFFIX = r"-\d{14}-[0-9a-f]{6}"
IN_PROGRESS = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})

Action = Literal["create", "update", "wait", "done", "recreate"]


class DeploymentError(ValueError):
    """The trigger form asks for something that cannot be deployed (the same input fails the same way)."""


def check_name(name: str, what: str = "endpoint name") -> str:
    if not _NAME.match(name):
        raise DeploymentError(f"{what} {name!r} is not a valid SageMaker name (letters, digits, hyphens; max 63)")
    return name


def deployment_id(run_id: str, at: datetime) -> str:
    """Unique per deployment, stable across retries of the same DAG run (so a retry reuses its names)."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:6]
    return f"{at:%Y%m%d%H%M%S}-{digest}"


def resource_name(endpoint_name: str, deployment: str) -> str:
    """The model and the endpoint config of one deployment share this name."""
    return check_name(f"{endpoint_name[:_BASE_CHARS].rstrip('-')}-{deployment}", "resource name")


def is_deployment_resource(endpoint_name: str, name: str) -> bool:
    """Whether a model or endpoint config name was made by resource_name for this endpoint."""
    base = re.escape(endpoint_name[:_BASE_CHARS].rstrip("-"))
    return re.fullmatch(base + _DEPLOYMENT_SUFFIX, name) is not None


def tgi_environment(model_id: str, num_gpus: int, max_input_length: int, max_total_tokens: int) -> dict[str, str]:
    """The TGI container's environment (SageMaker passes strings only)."""
    if not model_id.strip():
        raise DeploymentError("model_id is empty")
    if num_gpus < 1:
        raise DeploymentError(f"SM_NUM_GPUS must be at least 1, got {num_gpus}")
    if not 0 < max_input_length < max_total_tokens:
        raise DeploymentError(
            f"MAX_INPUT_LENGTH ({max_input_length}) must be positive and below MAX_TOTAL_TOKENS ({max_total_tokens})"
        )
    return {
        "HF_MODEL_ID": model_id,
        "SM_NUM_GPUS": str(num_gpus),
        "MAX_INPUT_LENGTH": str(max_input_length),
        "MAX_TOTAL_TOKENS": str(max_total_tokens),
    }


def autoscaling_range(low: int | None, high: int | None) -> tuple[int, int] | None:
    """Both ends or neither: half a range is a mistake in the form, not a default."""
    if low is None and high is None:
        return None
    if low is None or high is None:
        raise DeploymentError("set both autoscaling_min_instances and autoscaling_max_instances, or neither")
    if not 1 <= low <= high:
        raise DeploymentError(f"autoscaling range must satisfy 1 <= min <= max, got {low}..{high}")
    return low, high


def _tags(endpoint_name: str, deployment: str) -> list[dict[str, str]]:
    return [{"Key": TAG_ENDPOINT, "Value": endpoint_name}, {"Key": TAG_DEPLOYMENT, "Value": deployment}]


def model_request(
    name: str, image_uri: str, role_arn: str, environment: Mapping[str, str], tags: list[dict[str, str]]
) -> dict[str, Any]:
    """CreateModel: the TGI image pulls the weights from the Hugging Face Hub at start (HF_MODEL_ID)."""
    return {
        "ModelName": name,
        "ExecutionRoleArn": role_arn,
        "PrimaryContainer": {"Image": image_uri, "Environment": dict(environment)},
        "Tags": tags,
    }


def endpoint_config_request(
    name: str, model_name: str, instance_type: str, count: int, tags: list[dict[str, str]], startup_timeout_s: int
) -> dict[str, Any]:
    """CreateEndpointConfig with one variant; an 8B model downloads and loads for minutes, hence the timeouts."""
    return {
        "EndpointConfigName": name,
        "ProductionVariants": [
            {
                "VariantName": VARIANT,
                "ModelName": model_name,
                "InstanceType": instance_type,
                "InitialInstanceCount": count,
                "InitialVariantWeight": 1.0,
                "ContainerStartupHealthCheckTimeoutInSeconds": startup_timeout_s,
                "ModelDataDownloadTimeoutInSeconds": startup_timeout_s,
            }
        ],
        "Tags": tags,
    }


def plan_deployment(
    params: Mapping[str, Any],
    *,
    endpoint_name: str,
    role_arn: str | None,
    image_uri: str,
    run_id: str,
    at: datetime,
    startup_timeout_s: int = 900,
) -> dict[str, Any]:
    """Every request of one deployment, from the trigger form's values (validated here, before any AWS call)."""
    check_name(endpoint_name)
    if not role_arn:
        raise DeploymentError(
            "no SageMaker execution role: set PATIENTINSIGHT_SAGEMAKER_EXECUTION_ROLE_ARN or the execution_role param"
        )
    count = int(params["initial_instance_count"])
    if count < 1:
        raise DeploymentError(f"initial_instance_count must be at least 1, got {count}")
    environment = tgi_environment(
        str(params["model_id"]),
        int(params["sm_num_gpus"]),
        int(params["max_input_length"]),
        int(params["max_total_tokens"]),
    )
    scaling = autoscaling_range(params.get("autoscaling_min_instances"), params.get("autoscaling_max_instances"))
    deployment = deployment_id(run_id, at)
    name = resource_name(endpoint_name, deployment)
    tags = _tags(endpoint_name, deployment)
    return {
        "deployment": deployment,
        "endpoint_name": endpoint_name,
        "model_name": name,
        "endpoint_config_name": name,
        "image_uri": image_uri,
        "environment": environment,
        "instance_type": str(params["instance_type"]),
        "initial_instance_count": count,
        "autoscaling": None
        if scaling is None
        else {"min": scaling[0], "max": scaling[1], "target": float(params["autoscaling_target_invocations"])},
        "model": model_request(name, image_uri, role_arn, environment, tags),
        "endpoint_config": endpoint_config_request(
            name, name, str(params["instance_type"]), count, tags, startup_timeout_s
        ),
        "endpoint": {"EndpointName": endpoint_name, "EndpointConfigName": name, "Tags": tags},
    }


def described(describe: Callable[[str], Mapping[str, Any]], name: str) -> dict[str, Any] | None:
    """`describe(name)` (a SageMakerHook's describe_endpoint, describe_model, ... or a boto3 call), or None
    when SageMaker knows no such name: it answers ValidationException "Could not find ..."."""
    from botocore.exceptions import ClientError

    try:
        return dict(describe(name))
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationException" and "Could not find" in str(exc):
            return None
        raise


def deploy_action(current: Mapping[str, Any] | None, config_name: str) -> Action:
    """What a deployment does to the endpoint `current` (None: missing) so that it serves `config_name`:
    create when missing, update (SageMaker's blue/green) when live. A retry that finds its own config in
    progress or live waits or stops; a Failed endpoint cannot be updated, so it is deleted and created anew."""
    if current is None:
        return "create"
    status = current.get("EndpointStatus")
    ours = current.get("EndpointConfigName") == config_name
    pending_ours = (current.get("PendingDeploymentSummary") or {}).get("EndpointConfigName") == config_name
    if status == "Failed":
        return "recreate"
    if status in IN_PROGRESS and (ours or pending_ours):
        return "wait"
    if status == "InService" and ours:
        return "done"
    return "update"  # an update of an endpoint busy with someone else's change fails in SageMaker, clearly


def failure_message(description: Mapping[str, Any]) -> str:
    status = description.get("EndpointStatus")
    default = "SageMaker gave no FailureReason" if status == "Failed" else "the wait ended before InService"
    reason = description.get("FailureReason") or default
    return (
        f"SageMaker endpoint {description.get('EndpointName')} is {status} "
        f"(config {description.get('EndpointConfigName')}): {reason}"
    )


def endpoint_name_for(settings: Settings, requested: str | None = None) -> str:
    """The form's name, else serving's setting (PATIENTINSIGHT_SAGEMAKER_ENDPOINT_NAME), else the default."""
    return requested or settings.sagemaker_endpoint_name or DEFAULT_ENDPOINT_NAME


def record_path(settings: Settings, endpoint_name: str | None = None) -> Path:
    """Where the current deployment of an endpoint is described, for serving (JSON)."""
    name = endpoint_name or endpoint_name_for(settings)
    return settings.home / "llm_endpoints" / f"{check_name(name)}.json"


def write_record(settings: Settings, record: Mapping[str, Any]) -> Path:
    """Replace the record atomically, so a reader sees the old deployment or the new one."""
    path = record_path(settings, str(record["endpoint_name"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(dict(record), f, indent=2, sort_keys=True, default=str)
    Path(tmp).replace(path)
    return path


def read_record(settings: Settings, endpoint_name: str | None = None) -> dict[str, Any] | None:
    """The deployment serving calls (PATIENTINSIGHT_SAGEMAKER_ENDPOINT_NAME by default), or None."""
    path = record_path(settings, endpoint_name)
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def remove_record(settings: Settings, endpoint_name: str) -> bool:
    path = record_path(settings, endpoint_name)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed
