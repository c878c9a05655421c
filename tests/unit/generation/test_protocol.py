"""Every generator the factory makes, and the service's stand-in for a misconfigured one, has the
Generator Protocol's methods with its signatures (parameters and annotations), as mypy would check."""

from __future__ import annotations

import pytest

from patientinsight.generation.factory import make_generator
from patientinsight.generation.protocol import Analysis, Generator
from patientinsight.retrieval.cases import Case
from patientinsight.settings import Settings
from serving.state import MisconfiguredGenerator
from tests.protocols import protocol_drift


@pytest.mark.parametrize("name", ["extractive", "openai", "sagemaker"])
def test_every_generator_has_the_protocols_signatures(name: str) -> None:
    settings = Settings(generator=name, sagemaker_endpoint_name="an-endpoint", openai_base_url="http://127.0.0.1:9")
    generator = make_generator(settings)  # builds clients only: nothing is called
    assert generator.name == name
    assert protocol_drift(generator, Generator) == []


def test_the_misconfigured_stand_in_has_them_too() -> None:
    assert protocol_drift(MisconfiguredGenerator("openai", "no key"), Generator) == []


def test_the_check_sees_a_generator_that_drifted() -> None:
    class Drifted:
        name = "drifted"

        def generate(self, text: str, cases: list[Case]) -> Analysis: ...  # renamed parameter

        def follow_up(self, question: str, cases: list[Case]) -> str: ...  # another return type

    drift = "\n".join(protocol_drift(Drifted(), Generator))
    assert "generate: parameters" in drift and "follow_up: annotations" in drift
