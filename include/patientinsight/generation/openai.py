"""The generator on any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI's Messages API)."""

from __future__ import annotations

from patientinsight.generation.prompts import (
    FOLLOW_UP_PROMPT,
    SYSTEM_PROMPT,
    build_follow_up_prompt,
    build_user_prompt,
)
from patientinsight.generation.protocol import Analysis, resolve_citations
from patientinsight.retrieval.cases import Case


class OpenAIGenerator:
    """Chat completions at `base_url`; one client per process keeps its connections alive."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout_s: float, max_tokens: int) -> None:
        from openai import OpenAI

        self.model = model
        self.max_tokens = max_tokens
        # No retries: a retry would overrun the time budget, and the query answers without the analysis.
        self.client = OpenAI(base_url=base_url, api_key=api_key or "unset", timeout=timeout_s, max_retries=0)

    def generate(self, query: str, cases: list[Case]) -> Analysis:
        return self._complete(SYSTEM_PROMPT, build_user_prompt(query, cases), cases)

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        return self._complete(FOLLOW_UP_PROMPT, build_follow_up_prompt(question, cases), cases)

    def _complete(self, system: str, user: str, cases: list[Case]) -> Analysis:
        response = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=self.max_tokens,
            temperature=0.2,
        )
        text = (response.choices[0].message.content or "").strip()
        usage = None
        if response.usage is not None:
            usage = {
                "prompt_tokens": int(response.usage.prompt_tokens),
                "completion_tokens": int(response.usage.completion_tokens),
            }
        return Analysis(
            self.name, text=text, citations=resolve_citations(text, cases), model=response.model, usage=usage
        )
