"""llm_endpoint and llm_endpoint_teardown with dag.test(), against a real moto server (moto's ThreadedMotoServer,
started once by tests/conftest.py) reached through the Airflow aws connection's endpoint_url: real provider
operators, real boto3, a real MLflow store.

moto 5.2.5 implements CreateModel/CreateEndpointConfig/CreateEndpoint, Application Auto Scaling and the
sagemaker-runtime answer queue, but not UpdateEndpoint, and its endpoints never fail: tests/moto_sagemaker.py
adds both as a stand-in extension (see its docstring). The waits run deferrable, as configured by default
(dag.test() runs the provider's SageMakerTrigger in line)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from patientinsight.settings import Settings, get_settings
from patientinsight.tracking import LINK_XCOM_KEY, RUN_TAG
from tests.helpers import mlflow_run as read_mlflow_run
from tests.moto_sagemaker import connection_env, failing_endpoints, post_json, queue_endpoint_results

ROLE = "arn:aws:iam::123456789012:role/patientinsight-sagemaker-test"  # moto's default account, a test value
FAILING = "pi-failing"
FAILURE_REASON = "The primary container for production variant AllTraffic did not pass the ping health check."
ANSWER = json.dumps([{"generated_text": "Amoxicillin, or doxycycline, for five days."}])


@pytest.fixture(scope="module")
def moto_url(moto_url: str) -> Iterator[str]:
    """The shared moto server (tests/conftest.py), FAILING failing, and the aws connection pointed at it."""
    with failing_endpoints({FAILING: FAILURE_REASON}):
        url = moto_url
        saved = {k: os.environ.get(k) for k in connection_env(url)}
        os.environ.update(connection_env(url))
        os.environ["PATIENTINSIGHT_SAGEMAKER_EXECUTION_ROLE_ARN"] = ROLE
        yield url
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ.pop("PATIENTINSIGHT_SAGEMAKER_EXECUTION_ROLE_ARN", None)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_url: str) -> Iterator[Settings]:
    # A clean moto per test: its sagemaker-runtime answers are cached by request body across endpoints,
    # and the smoke test always sends the same body.
    post_json(f"{moto_url}/moto-api/reset", {})
    monkeypatch.setenv("PATIENTINSIGHT_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def dags(repo_root: Path, moto_url: str) -> Callable[[str], Any]:
    """A freshly parsed DAG per run: dag.test() runs every task in this process, and a run's conf would
    otherwise stay in the shared Param objects as the next run's defaults (in production each task runs
    in a process of its own)."""
    from airflow.dag_processing.dagbag import DagBag

    def parse(dag_id: str) -> Any:
        bag = DagBag(dag_folder=str(repo_root / "dags" / f"{dag_id}.py"))
        assert bag.import_errors == {}
        return bag.dags[dag_id]

    return parse


def trigger(dags: Callable[[str], Any], dag_id: str, **conf: Any) -> Any:
    return dags(dag_id).test(run_conf=conf)


def aws(moto_url: str, service: str) -> Any:
    return boto3.client(
        service, region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="t", aws_secret_access_key="t"
    )


def mlflow_run(settings: Settings, dag_run: Any) -> Any:
    """The MLflow run that the DAG run's plan opened, found by its run tag (whatever its status)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.llm_mlflow_experiment)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`{RUN_TAG}` = '{dag_run.run_id}'")
    return read_mlflow_run(settings.tracking_uri, found.info.run_id)


def task_states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def test_first_deployment_creates_then_second_updates(
    dags: Callable[[str], Any], home: Settings, moto_url: str
) -> None:
    sm = aws(moto_url, "sagemaker")
    scaling = aws(moto_url, "application-autoscaling")
    queue_endpoint_results(moto_url, [ANSWER])
    first = trigger(
        dags, "llm_endpoint", endpoint_name="pi-main", autoscaling_min_instances=1, autoscaling_max_instances=3
    )
    assert first.state == "success", task_states(first)

    endpoint = sm.describe_endpoint(EndpointName="pi-main")
    assert endpoint["EndpointStatus"] == "InService"
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.g5.2xlarge", 1)
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == ROLE
    assert model["PrimaryContainer"]["Environment"] == {
        "HF_MODEL_ID": "aaditya/Llama3-OpenBioLLM-8B", "SM_NUM_GPUS": "1",
        "MAX_INPUT_LENGTH": "3072", "MAX_TOTAL_TOKENS": "4096",
    }  # fmt: skip
    image = model["PrimaryContainer"]["Image"]
    assert image.endswith("/huggingface-pytorch-tgi-inference:2.7.0-tgi3.3.6-gpu-py311-cu124-ubuntu22.04")
    assert ".dkr.ecr.us-east-1.amazonaws.com/" in image  # the connection's region chose the image

    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["ResourceId"] == "endpoint/pi-main/variant/AllTraffic"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == 20.0

    record = json.loads((home.home / "llm_endpoints" / "pi-main.json").read_text())
    assert record["endpoint_arn"] == endpoint["EndpointArn"]
    assert record["endpoint_config_name"] == endpoint["EndpointConfigName"]
    assert record["autoscaling"]["max"] == 3

    run = mlflow_run(home, first)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sagemaker.endpoint"] == "pi-main" and run.data.tags["airflow.dag_id"] == "llm_endpoint"
    params, metrics = run.data.params, run.data.metrics
    assert params["model_id"] == "aaditya/Llama3-OpenBioLLM-8B" and params["instance_type"] == "ml.g5.2xlarge"
    assert params["endpoint_arn"] == endpoint["EndpointArn"] and params["deploy_action"] == "create"
    assert params["model_name"] == variant["ModelName"]
    assert params["endpoint_config_name"] == endpoint["EndpointConfigName"]
    assert params["image_uri"] == image and params["env.MAX_TOTAL_TOKENS"] == "4096"
    assert metrics["smoke_latency_seconds"] > 0 and metrics["smoke_answer_chars"] == len(
        json.loads(ANSWER)[0]["generated_text"]
    )
    assert {"deploy_seconds", "total_seconds"} <= set(metrics)
    artifacts = Path(urlparse(run.info.artifact_uri).path) / "endpoint"
    assert json.loads((artifacts / "pi-main.json").read_text()) == record

    # Every task instance links to the MLflow run, read from the one XCom that plan left.
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from plugins.mlflow_link import MlflowRunLink

    url = f"{home.mlflow_ui_url.rstrip('/')}/#/runs/{run.info.run_id}"
    for ti in first.get_task_instances():
        assert MlflowRunLink().get_link(None, ti_key=ti.key) == url, ti.task_id
    with create_session() as session:
        query = XComModel.get_many(run_id=first.run_id, dag_ids="llm_endpoint", key=LINK_XCOM_KEY)
        assert [row.task_id for row in session.scalars(query)] == ["plan"]

    # A second deployment: new names, the same endpoint moved to the new config; scaling off this time.
    second = trigger(dags, "llm_endpoint", endpoint_name="pi-main", initial_instance_count=2)
    assert second.state == "success", task_states(second)
    updated = sm.describe_endpoint(EndpointName="pi-main")
    assert updated["EndpointArn"] == endpoint["EndpointArn"]
    assert updated["EndpointConfigName"] != endpoint["EndpointConfigName"]
    new_config = sm.describe_endpoint_config(EndpointConfigName=updated["EndpointConfigName"])
    assert new_config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert new_config["ProductionVariants"][0]["ModelName"] != variant["ModelName"]
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    found = mlflow_run(home, second)
    assert found.data.params["deploy_action"] == "update" and found.info.status == "FINISHED"
    record = json.loads((home.home / "llm_endpoints" / "pi-main.json").read_text())
    assert record["endpoint_config_name"] == updated["EndpointConfigName"] and record["autoscaling"] is None

    # Teardown: endpoint, both configs, both models and the record go; a second teardown finds nothing.
    gone = trigger(dags, "llm_endpoint_teardown", endpoint_name="pi-main")
    assert gone.state == "success", task_states(gone)
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    assert not (home.home / "llm_endpoints" / "pi-main.json").exists()
    again = trigger(dags, "llm_endpoint_teardown", endpoint_name="pi-main")
    assert again.state == "success", task_states(again)


def test_failed_endpoint_fails_with_sagemakers_reason(
    dags: Callable[[str], Any], home: Settings, moto_url: str
) -> None:
    dag_run = trigger(dags, "llm_endpoint", endpoint_name=FAILING)
    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["deploy_endpoint"] == "failed" and states["smoke_test"] != "success", states
    assert not (home.home / "llm_endpoints" / f"{FAILING}.json").exists()
    found = mlflow_run(home, dag_run)
    assert found.info.status == "FAILED"
    assert FAILURE_REASON in found.data.tags["failure_reason"]
    assert f"SageMaker endpoint {FAILING} is Failed" in found.data.tags["failure_reason"]


def model_and_config(prefix: str) -> None:
    """`<prefix>-m` and `<prefix>-c`, through the operators the DAG runs before its deploy."""
    from patientinsight.airflow.sagemaker import CreateEndpointConfigOnceOperator, CreateModelOnceOperator

    model = {"ModelName": f"{prefix}-m", "ExecutionRoleArn": ROLE, "PrimaryContainer": {"Image": "image"}}
    variant = {"VariantName": "AllTraffic", "ModelName": f"{prefix}-m", "InstanceType": "ml.g5.2xlarge"}
    config = {"EndpointConfigName": f"{prefix}-c", "ProductionVariants": [{**variant, "InitialInstanceCount": 1}]}
    CreateModelOnceOperator(task_id="m", config=model).execute({})
    CreateEndpointConfigOnceOperator(task_id="c", config=config).execute({})


def test_operators_repeat_safely_and_fail_with_the_failure_reason(moto_url: str) -> None:
    """The operators on their own, waiting in the worker (not deferrable): a retry finds its model, config
    and live endpoint and changes nothing; a Failed endpoint's error is SageMaker's reason."""
    from airflow.sdk.exceptions import AirflowFailException

    from patientinsight.airflow.sagemaker import (
        CreateOrUpdateEndpointOperator,
    )

    post_json(f"{moto_url}/moto-api/reset", {})
    for _ in range(2):  # the second time is a retry
        model_and_config("pi-op")
    endpoint = {"EndpointName": "pi-op", "EndpointConfigName": "pi-op-c"}
    deploy = CreateOrUpdateEndpointOperator(task_id="deploy", config=dict(endpoint), deferrable=False)
    assert deploy.execute({})["action"] == "create"
    again = CreateOrUpdateEndpointOperator(task_id="deploy", config=dict(endpoint), deferrable=False)
    assert again.execute({})["action"] == "done"
    assert len(aws(moto_url, "sagemaker").list_models()["Models"]) == 1

    failing = CreateOrUpdateEndpointOperator(
        task_id="deploy", config={"EndpointName": FAILING, "EndpointConfigName": "pi-op-c"}, deferrable=False
    )
    with pytest.raises(AirflowFailException, match="did not pass the ping health check") as raised:
        failing.execute({})
    assert str(raised.value) == f"SageMaker endpoint {FAILING} is Failed (config pi-op-c): {FAILURE_REASON}"


def test_a_deferred_deploy_waits_no_longer_than_its_max_ingestion_time(moto_url: str) -> None:
    """The deferrable wait ends: the trigger polls for max_ingestion_time, and the deferral's own timeout
    comes just after it, so a deployment stuck in Creating fails instead of waiting for ever."""
    from airflow.sdk.exceptions import TaskDeferred

    from patientinsight.airflow.sagemaker import (
        CreateOrUpdateEndpointOperator,
    )

    post_json(f"{moto_url}/moto-api/reset", {})
    model_and_config("pi-defer")
    deploy = CreateOrUpdateEndpointOperator(
        task_id="deploy", config={"EndpointName": "pi-defer", "EndpointConfigName": "pi-defer-c"},
        deferrable=True, check_interval=20, max_ingestion_time=600,
    )  # fmt: skip
    with pytest.raises(TaskDeferred) as deferred:
        deploy.execute({})
    trigger = deferred.value.trigger
    polling = timedelta(seconds=trigger.waiter_delay * trigger.attempts)
    assert timedelta(seconds=600) <= polling < deferred.value.timeout <= polling + timedelta(minutes=1)
    assert aws(moto_url, "sagemaker").describe_endpoint(EndpointName="pi-defer")["EndpointConfigName"] == "pi-defer-c"


def test_malformed_smoke_answer_fails_the_run(dags: Callable[[str], Any], home: Settings, moto_url: str) -> None:
    queue_endpoint_results(moto_url, [json.dumps({"error": "Input validation error"})])
    dag_run = trigger(dags, "llm_endpoint", endpoint_name="pi-malformed")
    assert dag_run.state == "failed"
    states = task_states(dag_run)
    assert states["deploy_endpoint"] == "success" and states["smoke_test"] == "failed", states
    found = mlflow_run(home, dag_run)
    assert found.info.status == "FAILED"
    assert (
        "smoke test of pi-malformed: no non-empty 'generated_text' (keys: ['error'])"
        in found.data.tags["failure_reason"]
    )


def test_missing_role_fails_before_any_aws_call(
    dags: Callable[[str], Any], home: Settings, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PATIENTINSIGHT_SAGEMAKER_EXECUTION_ROLE_ARN")
    get_settings.cache_clear()
    dag_run = trigger(dags, "llm_endpoint", endpoint_name="pi-norole")
    assert dag_run.state == "failed" and task_states(dag_run)["plan"] == "failed"
    assert aws(moto_url, "sagemaker").list_models()["Models"] == []
