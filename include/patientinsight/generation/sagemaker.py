"""The generator on a SageMaker endpoint running the TGI container ({"inputs", "parameters"}): the client
only; the endpoint is deployed by the llm_endpoint DAG (llm/)."""

from __future__ import annotations

import json

from patientinsight.generation.prompts import (
    FOLLOW_UP_PROMPT,
    SYSTEM_PROMPT,
    build_follow_up_prompt,
    build_user_prompt,
)
from patientinsight.generation.protocol import Analysis, resolve_citations
from patientinsight.retrieval.cases import Case


def llama3_prompt(system: str, user: str) -> str:
    """OpenBioLLM is a Llama-3 fine-tune: TGI's /generate route wants the chat template applied by us."""
    return (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        f"{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        f"{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )


class SageMakerGenerator:
    """invoke_endpoint on a TGI container: {"inputs": prompt, "parameters": {...}} -> [{"generated_text"}]."""

    name = "sagemaker"

    def __init__(self, endpoint_name: str, region: str, timeout_s: float, max_tokens: int) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_name = endpoint_name
        self.max_tokens = max_tokens
        config = Config(
            connect_timeout=min(timeout_s, 5.0), read_timeout=timeout_s, retries={"max_attempts": 1, "mode": "standard"}
        )
        # The endpoint URL comes from boto3's own configuration (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME).
        self.client = boto3.client("sagemaker-runtime", region_name=region, config=config)

    def generate(self, query: str, cases: list[Case]) -> Analysis:
        return self._complete(SYSTEM_PROMPT, build_user_prompt(query, cases), cases)

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        return self._complete(FOLLOW_UP_PROMPT, build_follow_up_prompt(question, cases), cases)

    def _complete(self, system: str, user: str, cases: list[Case]) -> Analysis:
        body = {
            "inputs": llama3_prompt(system, user),
            "parameters": {
                "max_new_tokens": self.max_tokens,
                "temperature": 0.2,
                "return_full_text": False,
                "details": True,
                "stop": ["<|eot_id|>"],
            },
        }
        response = self.client.invoke_endpoint(
            EndpointName=self.endpoint_name,
            ContentType="application/json",
            Accept="application/json",
            Body=json.dumps(body).encode(),
        )
        payload = json.loads(response["Body"].read())
        first = payload[0] if isinstance(payload, list) else payload
        if not isinstance(first, dict) or "generated_text" not in first:
            raise ValueError("the endpoint's answer has no generated_text")
        text = str(first["generated_text"]).replace("<|eot_id|>", "").strip()
        details = first.get("details") or {}
        usage = {"completion_tokens": int(details["generated_tokens"])} if "generated_tokens" in details else None
        return Analysis(
            self.name, text=text, citations=resolve_citations(text, cases), model=self.endpoint_name, usage=usage
        )
