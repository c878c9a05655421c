"""The tests' one real moto server: moto.server.ThreadedMotoServer, in the test process on a free port
(tests/conftest.py's `moto_url` fixture starts it once), with the two SageMaker behaviours that moto 5.2.5
lacks added as a stand-in extension (named as such, and nothing else changed):

- UpdateEndpoint: moto does not implement it (the server answers "not implemented"). Here it switches the
  endpoint to the new endpoint config, as SageMaker does once its blue/green update completes, and
  refuses a missing endpoint or config with SageMaker's ValidationException.
- A Failed endpoint: moto's endpoints are InService at once and never fail. Endpoint names given to
  `failing_endpoints` ({name: FailureReason}) end Failed with that reason after CreateEndpoint or
  UpdateEndpoint, the way a container that fails its health check ends on SageMaker.

Also, as SageMaker does and moto does not: CreateEndpoint refuses an existing endpoint name, and endpoint
configs accept today's instance types (moto's own list predates ml.g5; the extension checks the type
against the SageMaker API's enum as botocore ships it)."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

# Endpoint name -> the FailureReason it ends Failed with; set through failing_endpoints.
_FAILURES: dict[str, str] = {}


@contextlib.contextmanager
def failing_endpoints(failures: dict[str, str]) -> Iterator[None]:
    """While inside, the endpoints named end Failed with their reason, as described above."""
    _FAILURES.update(failures)
    try:
        yield
    finally:
        for name in failures:
            _FAILURES.pop(name, None)


def _install() -> None:
    if getattr(_install, "done", False):  # patched once: a second wrap would wrap the wrapper
        return
    _install.done = True  # type: ignore[attr-defined]
    import botocore.session
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import FakeEndpoint, FakeEndpointConfig, SageMakerModelBackend
    from moto.sagemaker.responses import SageMakerResponse

    def settle(endpoint: Any) -> Any:
        if endpoint.endpoint_name in _FAILURES:
            endpoint.endpoint_status = "Failed"
            endpoint.failure_reason = _FAILURES[endpoint.endpoint_name]
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
def running_moto() -> Iterator[str]:
    """Start the server on a free port, with the extension, yield its URL, stop it at the end."""
    from moto.server import ThreadedMotoServer

    _install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    finally:
        server.stop()


def reset(url: str) -> None:
    """Every service's state dropped: the server as new. Its state is the test process's, so a test that
    needs it clean resets it (the `moto_url` fixture does, for each module)."""
    post_json(f"{url}/moto-api/reset", {})


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
