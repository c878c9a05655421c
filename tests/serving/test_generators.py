"""The openai generator against a stand-in chat-completions server, the sagemaker generator against a
real moto server with queued TGI answers; a generator that fails or times out still returns the cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import extractive_analysis, served
from tests.serving.openai_standin import USAGE, ChatCompletionsStandIn
from tests.serving.service import Service

QUERY = "Crushing retrosternal chest pain radiating to the left arm with ST-segment elevation"


def test_openai_analysis_cites_cases_resolved_to_uids(openai_service: Service, standin: ChatCompletionsStandIn) -> None:
    with openai_service.client() as client:
        response = client.post("/v1/query", json={"text": QUERY, "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    uids = [c["patient_uid"] for c in body["cases"]]
    analysis = body["analysis"]
    assert analysis["generator"] == "openai" and analysis["error"] is None
    assert analysis["model"] == "standin-clinical-model"
    assert analysis["text"] == standin.answers[-1]  # the model's text as it answered, "[1] ... [2], [3]."
    assert analysis["citations"] == [{"ref": i + 1, "patient_uid": uid} for i, uid in enumerate(uids)]
    assert analysis["usage"] == {key: USAGE[key] for key in ("prompt_tokens", "completion_tokens")}

    sent = standin.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-standin-key"
    assert sent["body"]["model"] == "standin-clinical-model"
    system, user = sent["body"]["messages"]
    assert system["role"] == "system" and "[1]" in system["content"] and "treatments" in system["content"]
    assert QUERY in user["content"]
    for position, case in enumerate(body["cases"], start=1):
        assert f"[{position}] {case['title']}" in user["content"]

    metrics = httpx.get(openai_service.url + "/metrics").text
    prompt_tokens = float(USAGE["prompt_tokens"])
    assert f'patientinsight_generator_tokens_total{{generator="openai",kind="prompt"}} {prompt_tokens}' in metrics
    assert 'patientinsight_generation_seconds_count{generator="openai",outcome="ok"}' in metrics


def test_openai_timeout_still_returns_the_cases(openai_service: Service, built_home: Path) -> None:
    query = QUERY + " STANDIN-SLOW"
    with openai_service.client() as client:
        response = client.post("/v1/query", json={"text": query, "k": 3})
    assert response.status_code == 200
    body = response.json()
    assert len(body["cases"]) == 3
    assert "timed out" in body["analysis"]["error"]
    fallback = {key: body["analysis"][key] for key in ("text", "citations")}
    assert fallback == extractive_analysis(query, body["cases"], built_home)
    metrics = httpx.get(openai_service.url + "/metrics").text
    assert 'patientinsight_generation_seconds_count{generator="openai",outcome="error"}' in metrics


def test_openai_server_error_still_returns_the_cases(openai_service: Service) -> None:
    with openai_service.client() as client:
        body = client.post("/v1/query", json={"text": QUERY + " STANDIN-FAIL", "k": 2}).json()
    assert len(body["cases"]) == 2
    assert "InternalServerError" in body["analysis"]["error"]
    assert "STANDIN-FAIL" not in openai_service.log()


AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def sagemaker_endpoint(moto_url: str, monkeypatch_module: pytest.MonkeyPatch) -> str:
    import boto3

    for key, value in AWS_ENV.items():
        monkeypatch_module.setenv(key, value)
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_url)
    name = "openbiollm-tgi"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
        PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": "main", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.xlarge"}
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"
    return name


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def sagemaker_service(
    built_home: Path, moto_url: str, sagemaker_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {
        **AWS_ENV,
        "PATIENTINSIGHT_DEV_MODE": "1",
        "PATIENTINSIGHT_GENERATOR": "sagemaker",
        "PATIENTINSIGHT_SAGEMAKER_ENDPOINT_NAME": sagemaker_endpoint,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": moto_url,
    }
    with served(built_home, tmp_path_factory.mktemp("sagemaker"), env).running() as service:
        yield service


def test_sagemaker_tgi_answers_and_failures(sagemaker_service: Service, moto_url: str) -> None:
    tgi_answer = [
        {
            "generated_text": "Both patients had an inferior STEMI [2] treated with primary PCI [1].<|eot_id|>",
            "details": {"finish_reason": "eos_token", "generated_tokens": 23},
        }
    ]
    queued = {
        "results": [
            {"Body": json.dumps(tgi_answer), "ContentType": "application/json"},
            {
                "Body": json.dumps({"error": "Input validation error: inputs too long"}),
                "ContentType": "application/json",
            },
        ]
    }
    assert httpx.post(moto_url + "/moto-api/static/sagemaker/endpoint-results", json=queued).status_code == 201

    with sagemaker_service.client() as client:
        first = client.post("/v1/query", json={"text": QUERY, "k": 3}).json()
        second = client.post("/v1/query", json={"text": "Polyuria, polydipsia and ketonaemia", "k": 2}).json()

    analysis = first["analysis"]
    assert analysis["generator"] == "sagemaker" and analysis["error"] is None, analysis
    assert analysis["text"] == tgi_answer[0]["generated_text"].removesuffix("<|eot_id|>")  # the stop token dropped
    uids = [c["patient_uid"] for c in first["cases"]]
    assert analysis["citations"] == [{"ref": 2, "patient_uid": uids[1]}, {"ref": 1, "patient_uid": uids[0]}]
    assert analysis["usage"] == {"completion_tokens": tgi_answer[0]["details"]["generated_tokens"]}

    # An answer without generated_text: the cases still come back, the error says what went wrong.
    assert len(second["cases"]) == 2
    assert "generated_text" in second["analysis"]["error"]
    metrics = httpx.get(sagemaker_service.url + "/metrics").text
    assert 'patientinsight_generator_tokens_total{generator="sagemaker",kind="completion"} 23.0' in metrics
