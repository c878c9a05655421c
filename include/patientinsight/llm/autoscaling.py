"""Application Auto Scaling for the endpoint's variant: target tracking on invocations per instance."""

from __future__ import annotations

import logging
from typing import Any

from patientinsight.llm.endpoint import VARIANT

log = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


def resource_id(endpoint_name: str, variant: str = VARIANT) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-invocations-per-instance"


def register(
    client: Any,
    endpoint_name: str,
    low: int,
    high: int,
    target_invocations: float,
    scale_in_cooldown_s: int = 600,
    scale_out_cooldown_s: int = 300,
) -> dict[str, Any]:
    """Register the variant as a scalable target and put (create or replace) its target-tracking policy.
    The target is invocations per instance per minute; cooldowns are long because a TGI instance takes
    minutes to load the model, so scaling out in a burst would only add instances that arrive late."""
    rid = resource_id(endpoint_name)
    client.register_scalable_target(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION, MinCapacity=low, MaxCapacity=high
    )
    response = client.put_scaling_policy(
        PolicyName=policy_name(endpoint_name),
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target_invocations),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": scale_in_cooldown_s,
            "ScaleOutCooldown": scale_out_cooldown_s,
        },
    )
    log.info(
        "autoscaling %s: %d..%d instances, target %.1f invocations/instance/min", rid, low, high, target_invocations
    )
    return {"resource_id": rid, "policy_arn": response["PolicyARN"], "min": low, "max": high}


def deregister(client: Any, endpoint_name: str) -> bool:
    """Remove the scalable target (its policies go with it). SageMaker refuses an update that changes the
    instance type of a variant registered for scaling, so the deployment deregisters before updating and
    registers again afterwards. Returns whether a target existed."""
    rid = resource_id(endpoint_name)
    found = client.describe_scalable_targets(ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION)
    if not found["ScalableTargets"]:
        return False
    client.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION)
    log.info("autoscaling %s deregistered", rid)
    return True
