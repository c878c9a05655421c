"""Every generator call goes through here: it runs with a deadline, and a generator that fails or runs past
its time never fails the request; the analysis then carries `error` and the extractive text."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from patientinsight.generation.extractive import ExtractiveGenerator
from patientinsight.generation.protocol import Analysis, Generator
from patientinsight.retrieval.cases import Case

log = logging.getLogger(__name__)

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
