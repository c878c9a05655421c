"""answers.py: which statuses are worth another try, what counts as Airflow's JSON, and how an answer reads
in an error message."""

from __future__ import annotations

import json

from answers import Answer, is_retryable, json_object, not_from_airflow, short


def test_only_throttling_and_server_errors_are_retried() -> None:
    assert [s for s in (200, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503) if is_retryable(s)] == [
        429,
        500,
        502,
        503,
    ]


def test_only_a_json_object_is_an_airflow_answer() -> None:
    assert json_object('{"detail": "x"}') == {"detail": "x"}
    for body in ("", "<html>login</html>", "[1, 2]", '"text"', "null", "[" * 100_000):
        assert json_object(body) is None, body[:20]


def test_an_answer_reads_as_its_detail_cut_short() -> None:
    assert short(json.dumps({"detail": "DAG not found"})) == "DAG not found"
    assert short(json.dumps({"detail": [{"loc": ["conf"], "msg": "bad"}]})) == '[{"loc": ["conf"], "msg": "bad"}]'
    assert short("x" * 1000) == "x" * 300 and short("") == "an empty body"
    reason = not_from_airflow(Answer(200, "<html/>", "POST https://a.example/dagRuns"), "a dag_run_id")
    assert reason.startswith("POST https://a.example/dagRuns answered HTTP 200 without a dag_run_id (<html/>)")
    assert "AIRFLOW_BASE_URL" in reason
