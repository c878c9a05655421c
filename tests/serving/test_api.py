"""The API contract, auth, limits and audit, against a real uvicorn process with API keys required."""

from __future__ import annotations

import json
import time

import httpx
import pandas as pd
import pytest

from serving.audit import read_audit
from tests.serving.conftest import API_KEY, OTHER_KEY, extractive_analysis
from tests.serving.service import Service

QUERY = "A man with fever, productive cough and pleuritic chest pain; consolidation on the chest radiograph."


def records(built_home) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    from patientinsight.index.embedded import EmbeddedIndex

    index = EmbeddedIndex(built_home / "index")
    return index.open(index.published()).frame(["uid", "title", "text", "age_years", "sex", "pmid"])


def test_excluded_cases_never_come_back(keyed_service: Service) -> None:
    with keyed_service.client(API_KEY) as client:
        first = client.post("/v1/query", json={"text": QUERY, "k": 3, "generate": False}).json()["cases"]
        hidden = [first[0]["patient_uid"]]
        body = {"text": QUERY, "k": 3, "generate": False, "exclude": hidden}
        again = client.post("/v1/query", json=body).json()["cases"]
        too_many = client.post("/v1/query", json={**body, "exclude": ["x"] * 101})
        not_a_number = client.post("/v1/query", json={"text": QUERY, "k": "3"})
    assert len(again) == 3 and hidden[0] not in [c["patient_uid"] for c in again]
    assert too_many.status_code == 422 and not_a_number.status_code == 422


def test_health_and_readiness_name_the_version(keyed_service: Service, built_home) -> None:  # type: ignore[no-untyped-def]
    from patientinsight.index.embedded import EmbeddedIndex

    assert httpx.get(keyed_service.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(keyed_service.url + "/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["index_version"] == EmbeddedIndex(built_home / "index").published()
    assert body["records"] == len(records(built_home))


def test_query_contract(keyed_service: Service, built_home) -> None:  # type: ignore[no-untyped-def]
    with keyed_service.client(API_KEY) as client:
        response = client.post("/v1/query", json={"text": QUERY, "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"cases", "analysis", "index_version", "retriever", "timings_ms"}
    assert len(body["cases"]) == 4
    stored = records(built_home).set_index("uid")
    for case in body["cases"]:
        assert set(case) == {
            "patient_uid", "pmid", "title", "article_url", "pmc_url", "age_years", "age_display", "sex",
            "synthetic", "score", "passages",
        }  # fmt: skip
        row = stored.loc[case["patient_uid"]]
        assert case["pmid"] == row["pmid"] and case["title"] == row["title"]
        assert case["article_url"] == f"https://pubmed.ncbi.nlm.nih.gov/{row['pmid']}/"
        assert case["passages"] and all(p in row["text"] for p in case["passages"])
    # The sample's pneumonia cases are the ones that match this description.
    assert "pneumonia" in body["cases"][0]["title"].lower()
    assert "consolidation" in " ".join(body["cases"][0]["passages"])
    scores = [c["score"] for c in body["cases"]]
    assert scores == sorted(scores, reverse=True)
    analysis = body["analysis"]
    assert analysis["generator"] == "extractive" and analysis["error"] is None
    expected = extractive_analysis(QUERY, body["cases"], built_home)
    assert {key: analysis[key] for key in ("text", "citations")} == expected
    assert [c["patient_uid"] for c in analysis["citations"]] == [c["patient_uid"] for c in body["cases"]]
    assert {"search", "generate", "total"} <= set(body["timings_ms"])


def test_filters_restrict_the_cases(keyed_service: Service) -> None:
    with keyed_service.client(API_KEY) as client:
        body = client.post(
            "/v1/query",
            json={"text": QUERY, "k": 50, "generate": False, "filters": {"sex": "F", "age_min": 30, "age_max": 70}},
        ).json()
    assert body["cases"], "the sample has women of 30 to 70"
    assert all(c["sex"] == "F" and 30 <= c["age_years"] <= 70 for c in body["cases"])
    assert body["analysis"]["generator"] == "none" and "generate" not in body["timings_ms"]


def test_case_by_uid_and_unknown_uid(keyed_service: Service, built_home) -> None:  # type: ignore[no-untyped-def]
    uid = records(built_home)["uid"].iloc[3]
    with keyed_service.client(API_KEY) as client:
        found = client.get(f"/v1/cases/{uid}")
        missing = client.get("/v1/cases/no-such-uid")
    assert found.status_code == 200
    assert found.json()["patient_uid"] == uid and found.json()["text"]
    assert missing.status_code == 404


@pytest.mark.parametrize("key", [None, "wrong-key", API_KEY[:-1]])
def test_missing_or_wrong_key_is_401(keyed_service: Service, key: str | None) -> None:
    with keyed_service.client(key) as client:
        assert client.post("/v1/query", json={"text": QUERY}).status_code == 401
        assert client.get("/v1/cases/any").status_code == 401


def test_every_configured_key_works(keyed_service: Service) -> None:
    for key in (API_KEY, OTHER_KEY):
        with keyed_service.client(key) as client:
            assert client.post("/v1/query", json={"text": QUERY, "generate": False}).status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"text": QUERY, "k": 0}, "k"),
        ({"text": QUERY, "k": 51}, "k"),
        ({"text": ""}, "text"),
        ({"k": 3}, "text"),
        ({"text": "x" * 20001}, "text"),
        ({"text": QUERY, "filters": {"sex": "X"}}, "filters.sex"),
        ({"text": QUERY, "filters": {"age_min": 60, "age_max": 20}}, "filters"),
        ({"text": QUERY, "colour": "red"}, "colour"),
    ],
)
def test_invalid_input_is_422_naming_the_field(keyed_service: Service, payload: dict, field: str) -> None:  # type: ignore[type-arg]
    with keyed_service.client(API_KEY) as client:
        response = client.post("/v1/query", json=payload)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["detail"]]
    assert "x" * 100 not in response.text  # the input is not echoed back


def test_body_size_is_limited(keyed_service: Service) -> None:
    big = json.dumps({"text": "fever " * 20000})  # 120 kB, above the 64 kB default
    with keyed_service.client(API_KEY) as client:
        declared = client.post("/v1/query", content=big, headers={"Content-Type": "application/json"})

        def chunks():  # type: ignore[no-untyped-def]
            # No Content-Length: the limit must hold while the body streams in.
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192].encode()

        streamed = client.post("/v1/query", content=chunks(), headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert streamed.status_code == 413


def test_metrics_are_prometheus(keyed_service: Service, built_home) -> None:  # type: ignore[no-untyped-def]
    with keyed_service.client(API_KEY) as client:
        client.post("/v1/query", json={"text": QUERY})
        client.get("/v1/cases/no-such-uid")
    text = httpx.get(keyed_service.url + "/metrics").text
    assert (
        'patientinsight_http_request_duration_seconds_bucket{le="0.1",method="POST",route="/v1/query",status="2xx"}'
        in text
    )
    assert 'route="/v1/cases/{patient_uid}",status="4xx"' in text  # the status class: a closed set of labels
    assert "patientinsight_retrieval_seconds_count" in text
    assert 'patientinsight_generation_seconds_count{generator="extractive",outcome="ok"}' in text
    assert f"patientinsight_index_records {float(len(records(built_home)))}" in text
    assert "patientinsight_index_info{" in text


def test_audit_records_each_query_and_logs_hold_no_text(keyed_service: Service) -> None:
    secret = "Zebrafish-allergy patient with quixotic nystagmus"
    with keyed_service.client(OTHER_KEY) as client:
        body = client.post("/v1/query", json={"text": secret, "k": 3}).json()
    rows: list[dict] = []  # type: ignore[type-arg]
    for _ in range(50):  # the audit writer is a background thread
        rows = [r for r in read_audit(keyed_service.audit_url) if r["text_length"] == len(secret)]
        if rows:
            break
        time.sleep(0.1)
    assert len(rows) == 1
    row = rows[0]
    assert row["key_id"] == "clinic-b"
    assert row["index_version"] == body["index_version"]
    assert row["returned_uids"] == [c["patient_uid"] for c in body["cases"]]
    assert row["at"] is not None and row["k"] == 3
    assert secret not in json.dumps(row, default=str)
    log = keyed_service.log()
    assert f"len={len(secret)}" in log  # the query was logged, by length and hash only
    assert "Zebrafish" not in log and "nystagmus" not in log
