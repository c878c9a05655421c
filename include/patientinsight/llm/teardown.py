"""Delete the endpoint, its endpoint configs and models, so an idle GPU endpoint stops costing money.
Deleting what is already gone is not an error: the teardown can run any time, and again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from patientinsight.llm.autoscaling import deregister
from patientinsight.llm.endpoint import described, is_deployment_resource

log = logging.getLogger(__name__)


def _missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response["Error"]["Code"] == "ValidationException"


def _deleted(delete: Callable[[], Any]) -> bool:
    """Run one delete; False when SageMaker says the resource is already gone (a repeated teardown)."""
    try:
        delete()
    except Exception as exc:
        if not _missing(exc):
            raise
        return False
    return True


def _names(sagemaker: Any, operation: str, key: str, name_key: str, endpoint_name: str) -> list[str]:
    paginator = sagemaker.get_paginator(operation)
    names: list[str] = []
    for page in paginator.paginate(NameContains=endpoint_name[:40]):
        names += [item[name_key] for item in page[key] if is_deployment_resource(endpoint_name, item[name_key])]
    return names


def teardown(
    sagemaker: Any,
    autoscaling: Any,
    endpoint_name: str,
    *,
    delete_models: bool = True,
    wait_delay_s: int = 15,
    wait_attempts: int = 80,
) -> dict[str, Any]:
    """Deregister scaling, delete the endpoint and wait until it is gone (a config in use cannot be
    deleted), then delete every config (and model) this project made for the endpoint."""
    deregistered = deregister(autoscaling, endpoint_name)
    current = described(lambda name: sagemaker.describe_endpoint(EndpointName=name), endpoint_name)
    configs = set(_names(sagemaker, "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", endpoint_name))
    if current is not None:
        configs.add(current["EndpointConfigName"])  # also one made outside this DAG
        _deleted(partial(sagemaker.delete_endpoint, EndpointName=endpoint_name))
        sagemaker.get_waiter("endpoint_deleted").wait(
            EndpointName=endpoint_name, WaiterConfig={"Delay": wait_delay_s, "MaxAttempts": wait_attempts}
        )
    deleted_configs = [
        name for name in sorted(configs) if _deleted(partial(sagemaker.delete_endpoint_config, EndpointConfigName=name))
    ]
    models = _names(sagemaker, "list_models", "Models", "ModelName", endpoint_name) if delete_models else []
    deleted_models = [name for name in sorted(models) if _deleted(partial(sagemaker.delete_model, ModelName=name))]
    result = {
        "endpoint_name": endpoint_name,
        "endpoint_deleted": current is not None,
        "autoscaling_deregistered": deregistered,
        "endpoint_configs_deleted": deleted_configs,
        "models_deleted": deleted_models,
    }
    log.info(
        "teardown of %s: endpoint deleted=%s, %d configs, %d models",
        endpoint_name, current is not None, len(deleted_configs), len(deleted_models),
    )  # fmt: skip
    return result
