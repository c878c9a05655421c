"""The analysis of the retrieved cases, and answers to follow-up questions about them: one generator
interface, three implementations.

- extractive: no language model; counts what the cases have in common (retrieval/commonality.py), and
  answers a follow-up with the cases' best-matching sentences (the offline default).
- openai: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, TGI's Messages API).
- sagemaker: a SageMaker endpoint running the TGI container ({"inputs", "parameters"}).

`generate_safely` and `follow_up_safely` are what callers use: a generator that fails or runs past its
time never fails the request; the analysis then carries `error` and the extractive text.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Protocol

from patientinsight.retrieval.ages import age_display
from patientinsight.retrieval.cases import Case
from patientinsight.retrieval.commonality import NO_MODEL, common_ground
from patientinsight.retrieval.passages import scored_sentences
from patientinsight.settings import Settings

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are a clinical decision-support assistant for physicians. You receive a description of a "
    "patient and numbered published case reports of similar patients. Write a concise analysis of the "
    "similar cases: the diagnoses they point to, the treatments that were given and the outcomes that "
    "were reported. Cite the cases by their number in square brackets, such as [1] or [2], after each "
    "statement they support. Use only the numbered cases; say so when they do not answer something. "
    "This supports, and does not replace, clinical judgement."
)
FOLLOW_UP_PROMPT = (
    "You are a clinical decision-support assistant for physicians. You receive numbered published case "
    "reports and a physician's question about them. Answer the question from these cases only, case by case "
    "where it helps. Cite the cases by their number in square brackets, such as [1] or [2], after each "
    "statement they support. When the cases do not say, say so; do not use outside knowledge. This supports, "
    "and does not replace, clinical judgement."
)
CASE_CHARS = 1500  # of each case's text in a prompt: enough for the treatment and outcome of most reports
_CITATION = re.compile(r"\[(\d+(?:\s*[,;-]\s*\d+)*)\]")


@dataclass
class Analysis:
    generator: str
    text: str | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    error: str | None = None
    usage: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "model": self.model,
            "text": self.text,
            "citations": self.citations,
            "error": self.error,
            "usage": self.usage,
        }


class Generator(Protocol):
    name: str

    def generate(self, query: str, cases: list[Case]) -> Analysis: ...

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        """An answer to a question about `cases` (the cases of an earlier answer), from them only."""
        ...


def resolve_citations(text: str, cases: list[Case]) -> list[dict[str, Any]]:
    """[1], [2, 3] and [1-2] in `text`, in order of first use, resolved to the uids of those positions."""
    seen: list[int] = []
    for group in _CITATION.findall(text):
        numbers: list[int] = []
        for part in re.split(r"\s*[,;]\s*", group):
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                numbers.extend(range(low, min(high, len(cases)) + 1))
            else:
                numbers.append(int(part))
        seen.extend(n for n in numbers if 1 <= n <= len(cases) and n not in seen)
    return [{"ref": n, "patient_uid": cases[n - 1].patient_uid} for n in seen]


def _describe(case: Case) -> str:
    age = age_display(case.age_years) or "age unknown"
    return f"{case.title or 'Untitled'} (PMID {case.pmid or 'unknown'}; {age}; sex {case.sex or 'unknown'})"


def build_user_prompt(query: str, cases: list[Case]) -> str:
    blocks = [f"[{i}] {_describe(c)}\n{c.text[:CASE_CHARS]}" for i, c in enumerate(cases, start=1)]
    return "Patient description:\n" + query.strip() + "\n\nSimilar published cases:\n\n" + "\n\n".join(blocks)


def build_follow_up_prompt(question: str, cases: list[Case]) -> str:
    blocks = [f"[{i}] {_describe(c)}\n{c.text[:CASE_CHARS]}" for i, c in enumerate(cases, start=1)]
    return "Question about these cases:\n" + question.strip() + "\n\nThe cases:\n\n" + "\n\n".join(blocks)


FOLLOW_UP_SENTENCES = 2  # per case, in the extractive answer
# Words of a question that ask rather than say what to look for.
_QUESTION_TERMS = frozenset({"which", "were", "was", "who", "what", "how", "mani", "ani", "did", "doe", "case"})


class ExtractiveGenerator:
    """No language model: what the cases have in common, counted and cited (no passage repeated); a
    follow-up is answered with the cases' sentences that best match the question, quoted and cited."""

    name = "extractive"

    def generate(self, query: str, cases: list[Case]) -> Analysis:
        text = common_ground(query, cases)
        return Analysis(self.name, text=text, citations=resolve_citations(text, cases))

    def follow_up(self, question: str, cases: list[Case]) -> Analysis:
        lines = [
            f"{NO_MODEL}, so this answer is not written by one: below are the sentences of the "
            f"{len(cases)} cases that best match the words of the question, quoted as they are."
        ]
        unmatched = []
        for ref, case in enumerate(cases, start=1):
            best = [
                sentence
                for overlap, _, sentence in scored_sentences(question, case.text, _QUESTION_TERMS)
                if overlap > 0
            ][:FOLLOW_UP_SENTENCES]
            if best:
                lines.append(f"[{ref}] " + " … ".join(f"“{sentence}”" for sentence in best))
            else:
                unmatched.append(ref)
        if unmatched:
            refs = ", ".join(f"[{n}]" for n in unmatched)
            lines.append(f"No sentence of {refs} shares a word with the question.")
        text = "\n".join(lines)
        return Analysis(self.name, text=text, citations=resolve_citations(text, cases))


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


# Generators run here so that a hung call can be abandoned at the deadline; clients also time out.
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="generator")


def generate_safely(generator: Generator, query: str, cases: list[Case], timeout_s: float) -> tuple[Analysis, float]:
    """The analysis and its duration in ms. Never raises: errors and timeouts become `analysis.error`,
    with the extractive text so that the answer still reads."""
    return _run_safely(generator, generator.generate, ExtractiveGenerator().generate, query, cases, timeout_s)


def follow_up_safely(
    generator: Generator, question: str, cases: list[Case], timeout_s: float
) -> tuple[Analysis, float]:
    """The answer to a follow-up question and its duration in ms; like `generate_safely`, it never raises,
    and a failed generator's answer is the extractive one, with `error` saying why."""
    return _run_safely(generator, generator.follow_up, ExtractiveGenerator().follow_up, question, cases, timeout_s)


def _run_safely(
    generator: Generator,
    call: Callable[[str, list[Case]], Analysis],
    fallback: Callable[[str, list[Case]], Analysis],
    text: str,
    cases: list[Case],
    timeout_s: float,
) -> tuple[Analysis, float]:
    started = time.perf_counter()
    future = _POOL.submit(call, text, cases)
    try:
        analysis = future.result(timeout=timeout_s)
    except FutureTimeout:
        future.cancel()
        analysis = _fallback(
            generator, fallback(text, cases), f"the {generator.name} generator timed out after {timeout_s:g} s"
        )
    except Exception as exc:  # any failure of an outside service: the request still answers
        if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():  # client-side deadline
            error = f"the {generator.name} generator timed out after {timeout_s:g} s ({type(exc).__name__})"
        else:
            error = f"the {generator.name} generator failed: {_reason(exc)}"
        analysis = _fallback(generator, fallback(text, cases), error)
    elapsed = (time.perf_counter() - started) * 1000
    if analysis.error:
        log.warning("generation failed after %.0f ms: %s", elapsed, analysis.error)
    return analysis, elapsed


def _reason(exc: Exception) -> str:
    # The class and a short message; no response bodies (they may echo patient text).
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _fallback(generator: Generator, extractive: Analysis, error: str) -> Analysis:
    return Analysis(
        generator.name,
        text=extractive.text,
        citations=extractive.citations,
        model=getattr(generator, "model", None),
        error=error,
    )
