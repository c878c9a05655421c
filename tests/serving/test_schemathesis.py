"""Property-based tests of the running service against its own OpenAPI document (schemathesis):
no 5xx, documented status codes, responses that match the schema; invalid query bodies (negative
examples) rejected.

Driven through schemathesis' strategies with hypothesis directly: its pytest loader (`from_fixture`)
does not run under pytest 9 here."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.serving.conftest import API_KEY
from tests.serving.service import Service

EXAMPLES_PER_OPERATION = 25  # bounded: a few seconds per operation on two cores


def follows_cross_field_rules(case: Any) -> bool:
    """JSON Schema cannot say "age_min <= age_max"; the API documents that rule in the filters' schema
    description and answers 422 when it is broken (tested in test_api.py). Schema-valid examples that
    break it are not positive examples."""
    filters = (case.body or {}).get("filters") if isinstance(case.body, dict) else None
    if not isinstance(filters, dict):
        return True
    low, high = filters.get("age_min"), filters.get("age_max")
    return not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high)


def test_api_conforms_to_its_openapi(keyed_service: Service) -> None:
    schema = schemathesis.openapi.from_url(keyed_service.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert {"POST /v1/query", "GET /v1/cases/{patient_uid}", "GET /readyz", "GET /healthz"} <= labels
    query = next(op for op in operations if op.label == "POST /v1/query")
    checked = 0
    runs = [(op, GenerationMode.POSITIVE) for op in operations] + [(query, GenerationMode.NEGATIVE)]
    for operation, mode in runs:
        strategy = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE:
            strategy = strategy.filter(follows_cross_field_rules)

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples on every run: CI must not fail by luck of the draw
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: Any) -> None:
            nonlocal checked
            case.call_and_validate(headers={"X-API-Key": API_KEY})
            checked += 1

        conforms()
    assert checked >= len(runs)
