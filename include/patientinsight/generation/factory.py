"""make_generator(settings): the configured generator, extractive unless a setting says otherwise."""

from __future__ import annotations

from patientinsight.generation.extractive import ExtractiveGenerator
from patientinsight.generation.openai import OpenAIGenerator
from patientinsight.generation.protocol import Generator
from patientinsight.generation.sagemaker import SageMakerGenerator
from patientinsight.settings import Settings


def make_generator(settings: Settings) -> Generator:
    if settings.generator == "openai":
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return OpenAIGenerator(
            settings.openai_base_url,
            settings.openai_model,
            key,
            settings.generator_timeout_s,
            settings.generator_max_tokens,
        )
    if settings.generator == "sagemaker":
        if not settings.sagemaker_endpoint_name:
            raise ValueError("PATIENTINSIGHT_SAGEMAKER_ENDPOINT_NAME is required for the sagemaker generator")
        return SageMakerGenerator(
            settings.sagemaker_endpoint_name,
            settings.sagemaker_region,
            settings.generator_timeout_s,
            settings.generator_max_tokens,
        )
    return ExtractiveGenerator()
