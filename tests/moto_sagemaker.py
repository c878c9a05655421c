"""A real moto server for the SageMaker tests, started as a subprocess, with the two SageMaker behaviours
that moto 5.2.5 lacks added as a stand-in extension (named as such, and nothing else changed):

- UpdateEndpoint: moto does not implement it (the server answers "not implemented"). Here it switches the
  endpoint to the new endpoint config, as SageMaker does once its blue/green update completes, and
  refuses a missing endpoint or config with SageMaker's ValidationException.
- A Failed endpoint: moto's endpoints are InService at once and never fail. Endpoint names listed in the
  environment variable MOTO_SAGEMAKER_FAIL (JSON {name: FailureReason}) end Failed with that reason after
  CreateEndpoint or UpdateEndpoint, the way a container that fails its health check ends on SageMaker.

Also, as SageMaker does and moto does not: CreateEndpoint refuses an existing endpoint name, and endpoint
configs accept today's instance types (moto's own list predates ml.g5; the extension checks the type
against the SageMaker API's enum as botocore ships it).

Run as `python -m tests.moto_sagemaker -H 127.0.0.1 -p PORT` (moto_server's own arguments)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.http_server import free_port

FAIL_ENV = "MOTO_SAGEMAKER_FAIL"


def _install() -> None:
    import botocore.session
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    failures: dict[str, str] = json.loads(os.environ.get(FAIL_ENV) or "{}")

    def settle(endpoint: Any) -> Any:
        if endpoint.endpoint_name in failures:
            endpoint.endpoint_status = "Failed"
            endpoint.failure_reason = failures[endpoint.endpoint_name]
        else:
            endpoint.endpoint_status, endpoint.failure_reason = "InService", None
        return endpoint

    shapes = botocore.session.get_session().get_service_model("sagemaker").shape_for("ProductionVariantInstanceType")
    instance_types = set(shapes.enum)

    def validate_instance_type(self: Any, instance_type: str) -> None:
        if instance_type not in instance_types:
            raise ValidationError(message=f"Value '{instance_type}' at 'instanceType' failed to satisfy constraint")

    original_create = SageMakerModelBackend.create_endpoint

    def create_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str, tags: Any) -> Any:
        if endpoint_name in self.endpoints:
            arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
            raise ValidationError(message=f'Cannot create already existing endpoint "{arn}".')
        return settle(original_create(self, endpoint_name, endpoint_config_name, tags))

    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> Any:
        endpoint = self.endpoints.get(endpoint_name)
        if endpoint is None:
            arn = FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
            raise ValidationError(message=f'Could not find endpoint "{arn}".')
        config = self.describe_endpoint_config(endpoint_config_name)  # ValidationException when missing
        endpoint.endpoint_config_name = endpoint_config_name
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        endpoint.last_modified_time = utcnow()
        return settle(endpoint)

    def update_endpoint_action(self: Any) -> ActionResult:
        endpoint = self.sagemaker_backend.update_endpoint(
            self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        )
        return ActionResult({"EndpointArn": endpoint.arn})

    FakeEndpointConfig.validate_instance_type = validate_instance_type  # type: ignore[method-assign]
    SageMakerModelBackend.create_endpoint = create_endpoint  # type: ignore[method-assign]
    SageMakerModelBackend.update_endpoint = update_endpoint  # type: ignore[attr-defined]
    SageMakerResponse.update_endpoint = update_endpoint_action  # type: ignore[attr-defined]


@contextlib.contextmanager
def moto_server(repo_root: Path, failures: dict[str, str] | None = None) -> Iterator[str]:
    """Start the server on a free port, yield its URL, stop it (and only it) at the end."""
    port = free_port()
    env = {**os.environ, FAIL_ENV: json.dumps(failures or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.moto_sagemaker", "-H", "127.0.0.1", "-p", str(port)],
        cwd=repo_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start (exit code {process.poll()})") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def post_json(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    urllib.request.urlopen(request, timeout=10).close()


def queue_endpoint_results(url: str, bodies: list[str]) -> None:
    """moto's queue of sagemaker-runtime answers (taken by the next new endpoint and request body)."""
    results = [{"Body": body, "ContentType": "application/json"} for body in bodies]
    post_json(f"{url}/moto-api/static/sagemaker/endpoint-results", {"results": results})


def connection_env(url: str) -> dict[str, str]:
    """The Airflow aws connection as an environment variable: dummy keys, the moto endpoint_url."""
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"region_name": "us-east-1", "endpoint_url": url},
    }
    return {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


if __name__ == "__main__":
    _install()
    from moto.server import main

    main(sys.argv[1:])
