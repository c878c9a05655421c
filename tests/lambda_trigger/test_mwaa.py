"""mwaa.py: the real boto3 MWAA client against the stand-in's invoke_rest_api."""

from __future__ import annotations

import pytest
from answers import TriggerError
from config import Config
from mwaa import MwaaBackend
from triggering import Deadline, process

from tests.lambda_trigger.sample_events import LambdaContext, s3_event
from tests.lambda_trigger.standin import FAULTS, AirflowStandIn


def mwaa_backend(url: str) -> MwaaBackend:
    """The real boto3 MWAA client, sent to the stand-in (no `env.` host prefix on a local address)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "mwaa",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(inject_host_prefix=False, retries={"max_attempts": 1}),
    )
    return MwaaBackend("patientinsight-prod", client)


def test_mwaa_backend_invokes_the_rest_api(airflow: tuple[str, AirflowStandIn]) -> None:
    url, state = airflow
    config = Config(mwaa_env="patientinsight-prod", prefix="intake/", backoff_base_s=0.01)
    backend = mwaa_backend(url)
    deadline = Deadline.of(LambdaContext(30), config)
    event = s3_event("intake-bucket", "intake/x.csv")

    assert process(event, config, backend, deadline)["triggered"] == 1
    [call] = state.requests
    assert call.path == "/restapi/patientinsight-prod"
    assert call.body["Path"] == "/dags/patient_ingest/dagRuns" and call.body["Method"] == "POST"
    assert (
        call.body["Body"]["logical_date"] is None
        and call.body["Body"]["conf"]["source_uri"] == "s3://intake-bucket/intake/x.csv"
    )
    assert "AWS4-HMAC-SHA256" in call.headers["Authorization"]  # IAM-signed, no Airflow password

    assert process(event, config, backend, deadline)["duplicate"] == 1  # 409 inside RestApiClientException
    state.script = [503]
    assert process(s3_event("intake-bucket", "intake/y.csv"), config, backend, deadline)["triggered"] == 1
    state.dags.clear()
    with pytest.raises(TriggerError, match=r"HTTP 404: The Dag with dag_id: `patient_ingest` was not found"):
        process(s3_event("intake-bucket", "intake/z.csv"), config, backend, deadline)


@pytest.mark.parametrize(("fault", "status"), [("200 HTML", 200), ("409 HTML", 409), ("MWAA 200 JSON array", 200)])
def test_an_answer_that_is_not_airflows_through_mwaa_is_no_success(
    airflow: tuple[str, AirflowStandIn], fault: str, status: int
) -> None:
    """No RestApiStatusCode: MWAA or something in front of it answered, not Airflow, so nothing was triggered."""
    url, state = airflow
    config = Config(mwaa_env="patientinsight-prod", prefix="intake/", backoff_base_s=0.01)
    state.trigger_faults = [FAULTS[fault]]
    said = f"MWAA patientinsight-prod POST /dags/patient_ingest/dagRuns answered HTTP {status} without Airflow's JSON"
    with pytest.raises(TriggerError, match=said):
        process(
            s3_event("intake-bucket", "intake/x.csv"), config, mwaa_backend(url), Deadline.of(LambdaContext(30), config)
        )
    assert state.runs == {}
