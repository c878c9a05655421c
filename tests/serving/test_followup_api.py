"""POST /v1/followup against real uvicorn processes: keys first, bad input, the extractive answer, the
audit row without the question, and the openai generator through its stand-in (answer and fallback)."""

from __future__ import annotations

import time

import httpx
import pytest

from serving.audit import read_audit
from tests.serving.conftest import API_KEY
from tests.serving.openai_standin import ChatCompletionsStandIn
from tests.serving.service import Service

QUERY = "Polyuria, polydipsia, vomiting and abdominal pain; blood glucose 32 mmol/L with ketonaemia"
QUESTION = "Which of these were treated with an insulin infusion?"


def returned_uids(client: httpx.Client, k: int = 3) -> list[str]:
    body = client.post("/v1/query", json={"text": QUERY, "k": k, "generate": False}).json()
    return [c["patient_uid"] for c in body["cases"]]


def test_followup_needs_a_key_before_anything_else(keyed_service: Service) -> None:
    with keyed_service.client() as client:
        assert client.post("/v1/followup", json={"question": QUESTION, "uids": ["x"]}).status_code == 401
        malformed = client.post("/v1/followup", content=b"{not json", headers={"Content-Type": "application/json"})
        assert malformed.status_code == 401
    with keyed_service.client("wrong-key") as client:
        assert client.post("/v1/followup", json={"question": QUESTION, "uids": ["x"]}).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"uids": ["a"]}, "question"),
        ({"question": "", "uids": ["a"]}, "question"),
        ({"question": QUESTION}, "uids"),
        ({"question": QUESTION, "uids": []}, "uids"),
        ({"question": QUESTION, "uids": ["a"] * 51}, "uids"),
        ({"question": QUESTION, "uids": [""]}, "uids.0"),
        ({"question": QUESTION, "uids": "a"}, "uids"),
        ({"question": 5, "uids": ["a"]}, "question"),
        ({"question": QUESTION, "uids": ["a"], "k": 3}, "k"),
        ({"question": "x" * 20001, "uids": ["a"]}, "question"),
    ],
)
def test_bad_followups_are_422_naming_the_field(keyed_service: Service, body: dict, field: str) -> None:
    with keyed_service.client(API_KEY) as client:
        response = client.post("/v1/followup", json=body)
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["detail"]]
    assert QUESTION not in response.text


def test_followup_answers_from_the_cases_and_audits_without_the_question(keyed_service: Service) -> None:
    secret = f"{QUESTION} {time.time_ns()}"
    with keyed_service.client(API_KEY) as client:
        uids = returned_uids(client)
        response = client.post("/v1/followup", json={"question": secret, "uids": uids + uids[:1]})
        unknown = client.post("/v1/followup", json={"question": secret, "uids": [uids[0], "no-such-uid"]})
        case = client.get(f"/v1/cases/{uids[0]}").json()
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["patient_uid"] for c in body["cases"]] == uids and [c["ref"] for c in body["cases"]] == [1, 2, 3]
    answer = body["answer"]
    assert answer["generator"] == "extractive" and answer["error"] is None
    assert answer["text"].startswith("No language model is configured") and "quoted" in answer["text"]
    assert "insulin infusion" in answer["text"] and "[1] “" in answer["text"]
    assert {c["ref"] for c in answer["citations"]} <= {1, 2, 3} and answer["citations"]
    assert all(c["patient_uid"] == uids[c["ref"] - 1] for c in answer["citations"])
    assert case["synthetic"] is True and case["pmc_url"].startswith("https://pmc.ncbi.nlm.nih.gov/articles/PMC")
    assert unknown.status_code == 404 and secret not in unknown.text

    for _ in range(50):  # the audit writer is a background thread
        rows = [r for r in read_audit(keyed_service.audit_url) if r["text_length"] == len(secret)]
        if rows:
            break
        time.sleep(0.1)
    assert len(rows) == 1  # the answered follow-up; the 404 is not audited
    row = rows[0]
    assert row["key_id"] == "clinic-a" and row["returned_uids"] == uids and row["k"] == 3
    assert row["generator"] == "extractive" and secret not in str(row)
    assert secret not in keyed_service.log() and QUESTION not in keyed_service.log()
    assert "followup key=clinic-a" in keyed_service.log()


def test_readiness_counts_the_synthetic_records(keyed_service: Service) -> None:
    ready = httpx.get(keyed_service.url + "/readyz").json()
    assert ready["synthetic_records"] == ready["records"] > 0  # the served index is the synthetic sample


def test_openai_answers_the_followup_from_those_cases_only(
    openai_service: Service, standin: ChatCompletionsStandIn
) -> None:
    with openai_service.client() as client:
        uids = returned_uids(client)
        response = client.post("/v1/followup", json={"question": QUESTION, "uids": uids})
    assert response.status_code == 200, response.text
    answer = response.json()["answer"]
    assert answer["generator"] == "openai" and answer["error"] is None and answer["model"] == "standin-clinical-model"
    assert answer["text"] == standin.answers[-1]
    assert [c["patient_uid"] for c in answer["citations"]] == [uids[0], uids[1], uids[2]]
    system, user = standin.requests[-1]["body"]["messages"]
    assert "question" in system["content"] and "only" in system["content"]
    assert QUESTION in user["content"] and QUERY not in user["content"]
    assert user["content"].count("\n[") == 3  # the three cases, numbered, and nothing else
    metrics = httpx.get(openai_service.url + "/metrics").text
    assert 'patientinsight_generation_seconds_count{generator="openai",outcome="ok"}' in metrics


def test_a_failing_generator_falls_back_to_the_quoted_sentences(openai_service: Service) -> None:
    with openai_service.client() as client:
        uids = returned_uids(client, 2)
        failed = client.post("/v1/followup", json={"question": QUESTION + " STANDIN-FAIL", "uids": uids}).json()
        slow = client.post("/v1/followup", json={"question": QUESTION + " STANDIN-SLOW", "uids": uids}).json()
    assert "failed" in failed["answer"]["error"] and "timed out" in slow["answer"]["error"]
    for body in (failed, slow):
        assert body["answer"]["generator"] == "openai"
        assert body["answer"]["text"].startswith("No language model is configured") and body["answer"]["citations"]
