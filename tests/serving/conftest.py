"""Serving tests: one real index built by the real ingest from the synthetic sample (once per
session), and real uvicorn processes of the service over it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serving.openai_standin import ChatCompletionsStandIn
from tests.serving.service import Service

API_KEY = "test-key-" + "x" * 32
OTHER_KEY = "other-key-" + "y" * 32


def keys_setting() -> str:
    from serving.auth import hash_key

    return f"clinic-a:{hash_key(API_KEY)},clinic-b:{hash_key(OTHER_KEY)}"


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory, sample_csv: Path) -> Path:
    """A PatientInsight home with one published index version of the sample, made by run_ingest."""
    from patientinsight.ingest.run import run_ingest
    from patientinsight.settings import Settings

    home = tmp_path_factory.mktemp("served-home")
    run_ingest(str(sample_csv), Settings(home=home), run_id="serving-tests")
    return home


def copy_index(built_home: Path, home: Path) -> Path:
    """A home of its own, with a copy of the built index (for tests that publish new versions)."""
    shutil.copytree(built_home / "index", home / "index")
    return home


def served(built_home: Path, folder: Path, env: dict[str, str]) -> Service:
    """A service over the built index (its PATIENTINSIGHT_HOME), with its log and audit database in `folder`."""
    return Service(folder, env={"PATIENTINSIGHT_HOME": str(built_home), **env})


def served_with_limits(built_home: Path, folder: Path, client_timeout_s: float, limit_concurrency: int) -> Service:
    """The keyed service with a given head/body timeout and concurrency limit (rate limit out of the way):
    what the slow- and many-client tests probe."""
    env = {
        "PATIENTINSIGHT_API_KEYS": keys_setting(),
        "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "100000",
        "PATIENTINSIGHT_SERVE_CLIENT_TIMEOUT_S": str(client_timeout_s),
        "PATIENTINSIGHT_SERVE_LIMIT_CONCURRENCY": str(limit_concurrency),
    }
    return served(built_home, folder, env)


def extractive_analysis(query: str, cases: list[dict[str, Any]], built_home: Path) -> dict[str, Any]:
    """What the extractive generator (the offline default, and every generator's fallback) writes for the
    cases of an answer (it reads their whole text, from the index in `built_home`)."""

    from patientinsight.generation.extractive import ExtractiveGenerator
    from patientinsight.index.embedded import EmbeddedIndex
    from patientinsight.retrieval.cases import Case

    index = EmbeddedIndex(built_home / "index")
    published = index.published()
    assert published is not None
    texts = index.open(published).frame(["uid", "text"]).set_index("uid")["text"]
    fields = ("patient_uid", "pmid", "title", "age_years", "sex", "score", "passages")
    rebuilt = [Case(**{f: c[f] for f in fields}, text=texts[c["patient_uid"]]) for c in cases]
    analysis = ExtractiveGenerator().generate(query, rebuilt)
    return {"text": analysis.text, "citations": analysis.citations}


@pytest.fixture(scope="session")
def keyed_service(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The production posture: API keys required (no dev mode), the default limits."""
    env = {"PATIENTINSIGHT_API_KEYS": keys_setting(), "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "100000"}
    with served(built_home, tmp_path_factory.mktemp("keyed"), env).running() as service:
        yield service


@pytest.fixture(scope="session")
def dev_service(built_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Development mode on loopback: no key needed."""
    env = {"PATIENTINSIGHT_DEV_MODE": "true", "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "100000"}
    with served(built_home, tmp_path_factory.mktemp("dev"), env).running() as service:
        yield service


# The chat-completions stand-in and a service that generates through it, one per test module that asks.
@pytest.fixture(scope="module")
def standin() -> Iterator[ChatCompletionsStandIn]:
    with ChatCompletionsStandIn(api_key="sk-standin-key", slow_s=6.0) as server:
        yield server


@pytest.fixture(scope="module")
def openai_service(
    built_home: Path, standin: ChatCompletionsStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = {
        "PATIENTINSIGHT_DEV_MODE": "1",
        "PATIENTINSIGHT_GENERATOR": "openai",
        "PATIENTINSIGHT_OPENAI_BASE_URL": standin.base_url,
        "PATIENTINSIGHT_OPENAI_MODEL": "standin-clinical-model",
        "PATIENTINSIGHT_OPENAI_API_KEY": "sk-standin-key",
        "PATIENTINSIGHT_GENERATOR_TIMEOUT_S": "1.5",
    }
    with served(built_home, tmp_path_factory.mktemp("openai"), env).running() as service:
        yield service


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """A real headless Chromium (Debian's chromium and chromedriver) with a profile of its own."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
