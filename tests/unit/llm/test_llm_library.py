"""The LLM endpoint's plain functions, without Airflow: the TGI image table, the deployment plan, the
create-or-update decision, the smoke-test contract and the record; then autoscaling, the smoke test and the
teardown against a real moto server (tests/moto_sagemaker.py) through boto3."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from patientinsight.llm import autoscaling, smoke
from patientinsight.llm.endpoint import (
    DeploymentError,
    deploy_action,
    described,
    failure_message,
    is_deployment_resource,
    plan_deployment,
    read_record,
    remove_record,
    write_record,
)
from patientinsight.llm.teardown import teardown
from patientinsight.llm.tgi_image import ImageLookupError, tgi_image_uri
from patientinsight.settings import Settings
from tests.moto_sagemaker import post_json, queue_endpoint_results

ROLE = "arn:aws:iam::123456789012:role/test"  # moto's default account; a test value only
AT = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
PARAMS: dict[str, Any] = {
    "model_id": "aaditya/Llama3-OpenBioLLM-8B",
    "instance_type": "ml.g5.2xlarge",
    "initial_instance_count": 1,
    "sm_num_gpus": 1,
    "max_input_length": 3072,
    "max_total_tokens": 4096,
    "autoscaling_min_instances": None,
    "autoscaling_max_instances": None,
    "autoscaling_target_invocations": 20.0,
}


def plan(endpoint: str = "pi-unit", run_id: str = "manual__1", **changes: Any) -> dict[str, Any]:
    return plan_deployment(
        {**PARAMS, **changes}, endpoint_name=endpoint, role_arn=ROLE, image_uri="image", run_id=run_id, at=AT
    )


# The TGI image


@pytest.mark.parametrize(
    ("region", "version"),
    [("us-east-1", "3.3.6"), ("eu-central-1", "3.3"), ("cn-north-1", "3.3.6"), ("us-west-2", "2.0.2")],
)
def test_tgi_image_is_the_one_the_sagemaker_sdk_retrieves(
    region: str, version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # sagemaker.core wants one at import
    from sagemaker.core import image_uris

    expected = image_uris.retrieve(
        "huggingface-llm", region=region, version=version, image_scope="inference", instance_type="ml.g5.2xlarge"
    )
    assert tgi_image_uri(region, version) == expected


def test_tgi_image_differs_by_region_and_refuses_unknowns() -> None:
    assert tgi_image_uri("cn-north-1").split(".")[0] != tgi_image_uri("us-east-1").split(".")[0]
    assert ".amazonaws.com.cn/" in tgi_image_uri("cn-north-1")
    with pytest.raises(ImageLookupError, match=r"'9\.9\.9'"):
        tgi_image_uri("us-east-1", "9.9.9")
    with pytest.raises(ImageLookupError, match="no-such-region"):
        tgi_image_uri("no-such-region")


# The plan


def test_names_are_unique_per_deployment_and_stable_across_retries() -> None:
    first, retry, other = plan(run_id="manual__1"), plan(run_id="manual__1"), plan(run_id="manual__2")
    assert first["model_name"] == retry["model_name"]
    assert first["model_name"] != other["model_name"]
    assert first["model_name"].startswith("pi-unit-20261126120000-")
    assert first["endpoint"] == {
        "EndpointName": "pi-unit", "EndpointConfigName": first["endpoint_config_name"], "Tags": first["model"]["Tags"],
    }  # fmt: skip
    long = plan(endpoint="e" * 63)
    assert len(long["model_name"]) <= 63 and is_deployment_resource("e" * 63, long["model_name"])
    assert not is_deployment_resource("pi", first["model_name"]) and is_deployment_resource(
        "pi-unit", first["model_name"]
    )


def test_plan_carries_the_tgi_environment_and_the_variant() -> None:
    planned = plan(initial_instance_count=2, autoscaling_min_instances=1, autoscaling_max_instances=4)
    assert planned["model"]["PrimaryContainer"]["Environment"] == {
        "HF_MODEL_ID": "aaditya/Llama3-OpenBioLLM-8B", "SM_NUM_GPUS": "1",
        "MAX_INPUT_LENGTH": "3072", "MAX_TOTAL_TOKENS": "4096",
    }  # fmt: skip
    assert planned["model"]["ExecutionRoleArn"] == ROLE
    (variant,) = planned["endpoint_config"]["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g5.2xlarge", 2)
    assert planned["autoscaling"] == {"min": 1, "max": 4, "target": 20.0}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_input_length": 4096}, "MAX_INPUT_LENGTH"),
        ({"autoscaling_min_instances": 2}, "or neither"),
        ({"autoscaling_min_instances": 3, "autoscaling_max_instances": 2}, "min <= max"),
        ({"initial_instance_count": 0}, "initial_instance_count"),
        ({"model_id": " "}, "model_id"),
    ],
)
def test_bad_forms_fail_before_any_aws_call(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DeploymentError, match=message):
        plan(**changes)


def test_no_role_and_bad_names_are_refused() -> None:
    with pytest.raises(DeploymentError, match="PATIENTINSIGHT_SAGEMAKER_EXECUTION_ROLE_ARN"):
        plan_deployment(PARAMS, endpoint_name="pi", role_arn=None, image_uri="i", run_id="r", at=AT)
    with pytest.raises(DeploymentError, match="not a valid SageMaker name"):
        plan(endpoint="bad_name")


# Create or update


@pytest.mark.parametrize(
    ("current", "action"),
    [
        (None, "create"),
        ({"EndpointStatus": "InService", "EndpointConfigName": "old"}, "update"),
        ({"EndpointStatus": "InService", "EndpointConfigName": "new"}, "done"),
        ({"EndpointStatus": "Creating", "EndpointConfigName": "new"}, "wait"),
        ({"EndpointStatus": "Updating", "PendingDeploymentSummary": {"EndpointConfigName": "new"}}, "wait"),
        ({"EndpointStatus": "Updating", "EndpointConfigName": "old"}, "update"),
        ({"EndpointStatus": "Failed", "EndpointConfigName": "old"}, "recreate"),
    ],
)  # fmt: skip
def test_deploy_action(current: dict[str, Any] | None, action: str) -> None:
    assert deploy_action(current, "new") == action


def test_failure_message_carries_the_reason() -> None:
    message = failure_message(
        {"EndpointName": "e", "EndpointStatus": "Failed", "EndpointConfigName": "c", "FailureReason": "no capacity"}
    )
    assert message == "SageMaker endpoint e is Failed (config c): no capacity"
    timed_out = failure_message({"EndpointName": "e", "EndpointStatus": "Creating", "EndpointConfigName": "c"})
    assert timed_out == "SageMaker endpoint e is Creating (config c): the wait ended before InService"


# The smoke-test contract


def test_generated_text_accepts_tgi_answers() -> None:
    assert smoke.generated_text("e", b'[{"generated_text": "Amoxicillin."}]') == "Amoxicillin."
    assert smoke.generated_text("e", b'{"generated_text": "Amoxicillin."}') == "Amoxicillin."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"body", "not JSON"),
        (b"[]", "got a JSON list"),
        (b'"text"', "got a JSON str"),
        (b'[{"generated_text": ""}]', "no non-empty 'generated_text'"),
        (b'[{"error": "CUDA out of memory"}]', "keys: \\['error'\\]"),
    ],
)
def test_malformed_answers_fail_clearly(body: bytes, message: str) -> None:
    with pytest.raises(smoke.SmokeTestFailed, match=message):
        smoke.generated_text("e", body)


def test_the_smoke_request_is_tgi_shaped_and_fixed() -> None:
    payload = json.loads(smoke.request_body())
    assert payload == {"inputs": smoke.SMOKE_PROMPT, "parameters": {"max_new_tokens": 64, "do_sample": False}}


# The record serving reads


def test_record_round_trip(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, sagemaker_endpoint_name="pi-served")
    assert read_record(settings) is None
    write_record(settings, {"endpoint_name": "pi-served", "endpoint_config_name": "c1"})
    write_record(settings, {"endpoint_name": "pi-served", "endpoint_config_name": "c2"})
    assert read_record(settings) == {"endpoint_name": "pi-served", "endpoint_config_name": "c2"}
    assert list((tmp_path / "llm_endpoints").iterdir()) == [tmp_path / "llm_endpoints" / "pi-served.json"]
    assert remove_record(settings, "pi-served") and not remove_record(settings, "pi-served")


# Against moto


@pytest.fixture
def clients(moto_url: str) -> dict[str, Any]:
    post_json(f"{moto_url}/moto-api/reset", {})
    kwargs = {
        "region_name": "us-east-1",
        "endpoint_url": moto_url,
        "aws_access_key_id": "t",
        "aws_secret_access_key": "t",
    }
    return {s: boto3.client(s, **kwargs) for s in ("sagemaker", "sagemaker-runtime", "application-autoscaling")}  # type: ignore[call-overload]


def deploy(sm: Any, planned: dict[str, Any], create: bool = True) -> None:
    sm.create_model(**planned["model"])
    sm.create_endpoint_config(**planned["endpoint_config"])
    if create:
        sm.create_endpoint(**planned["endpoint"])
    else:
        sm.update_endpoint(EndpointName=planned["endpoint_name"], EndpointConfigName=planned["endpoint_config_name"])


def test_described_is_none_for_a_name_sagemaker_does_not_know(clients: dict[str, Any]) -> None:
    sm = clients["sagemaker"]
    planned = plan()
    deploy(sm, planned)
    found = described(lambda name: sm.describe_endpoint(EndpointName=name), "pi-unit")
    assert found is not None and found["EndpointConfigName"] == planned["endpoint_config_name"]
    assert described(lambda name: sm.describe_endpoint(EndpointName=name), "pi-nowhere") is None
    assert described(lambda name: sm.describe_model(ModelName=name), "pi-nowhere") is None


def test_smoke_test_reads_the_queued_answer(clients: dict[str, Any], moto_url: str) -> None:
    queue_endpoint_results(moto_url, [json.dumps([{"generated_text": "Amoxicillin for five days."}])])
    result = smoke.run(clients["sagemaker-runtime"], "pi-unit")
    assert result["answer_chars"] == len("Amoxicillin for five days.") and result["latency_seconds"] > 0


def test_smoke_test_fails_on_moto_canned_answer(clients: dict[str, Any]) -> None:
    with pytest.raises(smoke.SmokeTestFailed, match="not JSON"):
        smoke.run(clients["sagemaker-runtime"], "pi-unit")  # nothing queued: moto answers "body"


def test_autoscaling_registers_and_deregisters(clients: dict[str, Any]) -> None:
    scaling = clients["application-autoscaling"]
    registered = autoscaling.register(scaling, "pi-unit", 1, 4, 15.0)
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (
        "endpoint/pi-unit/variant/AllTraffic",
        1,
        4,
    )
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["PolicyARN"] == registered["policy_arn"] and policy["PolicyType"] == "TargetTrackingScaling"
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == 15.0
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert autoscaling.deregister(scaling, "pi-unit") is True
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert autoscaling.deregister(scaling, "pi-unit") is False


def test_teardown_deletes_this_endpoints_resources_only(clients: dict[str, Any]) -> None:
    sm = clients["sagemaker"]
    first, second, neighbour = plan(run_id="r1"), plan(run_id="r2"), plan(endpoint="pi-unit-2", run_id="r3")
    deploy(sm, first)
    deploy(sm, second, create=False)
    deploy(sm, neighbour)
    autoscaling.register(clients["application-autoscaling"], "pi-unit", 1, 2, 20.0)

    result = teardown(sm, clients["application-autoscaling"], "pi-unit", wait_delay_s=1)
    assert result["endpoint_deleted"] and result["autoscaling_deregistered"]
    assert result["endpoint_configs_deleted"] == sorted([first["endpoint_config_name"], second["endpoint_config_name"]])
    assert result["models_deleted"] == sorted([first["model_name"], second["model_name"]])
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["pi-unit-2"]
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == [
        neighbour["endpoint_config_name"]
    ]

    again = teardown(sm, clients["application-autoscaling"], "pi-unit", wait_delay_s=1)  # gone already: no error
    assert again == {
        "endpoint_name": "pi-unit", "endpoint_deleted": False, "autoscaling_deregistered": False,
        "endpoint_configs_deleted": [], "models_deleted": [],
    }  # fmt: skip
