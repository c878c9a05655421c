"""Test-wide set-up: a throw-away Airflow home and PatientInsight home per session, set before any
Airflow import so that every test (and dag.test()) uses them; offline model loading."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="patientinsight-tests-"))

# lambda_trigger/ is zipped alone, its modules at the zip's root importing each other by their plain names
# (`import config`): the tests import them so too. Appended, so that it shadows nothing.
sys.path.append(str(Path(__file__).resolve().parents[1] / "lambda_trigger"))


def pytest_configure(config: pytest.Config) -> None:
    root = config.rootpath
    os.environ.update(
        {
            "AIRFLOW_HOME": str(_SESSION_DIR / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PATIENTINSIGHT_HOME": str(_SESSION_DIR / "home"),
            # One model cache for every test's home: the ONNX export, its OpenVINO conversion and int8
            # calibration are made once per session, not once per temporary home.
            "PATIENTINSIGHT_MODEL_CACHE_DIR": str(_SESSION_DIR / "models"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test marked `ends_module` stops what its module's fixture started (make run's Ctrl-C): it runs
    after the module's other tests, in whatever order pytest-randomly put them."""
    first_seen: dict[object, int] = {}
    for number, item in enumerate(items):
        first_seen.setdefault(item.parent, number)
    items.sort(key=lambda item: (first_seen[item.parent], item.get_closest_marker("ends_module") is not None))


@pytest.fixture(scope="session")
def repo_root(pytestconfig: pytest.Config) -> Path:
    return pytestconfig.rootpath


@pytest.fixture(scope="session")
def real_data_dir(repo_root: Path) -> Path:
    """../shared/data/pmc-patients beside the checkout (CI has it); tests that need it skip without it."""
    path = Path(os.environ.get("PATIENTINSIGHT_REAL_DATA", repo_root.parent / "shared" / "data" / "pmc-patients"))
    if not path.exists():
        pytest.skip(f"real PMC-Patients records not found at {path}")
    return path


@pytest.fixture(scope="session")
def _moto_server() -> Iterator[str]:
    from tests.moto_sagemaker import running_moto

    with running_moto() as url:
        yield url


@pytest.fixture(scope="module")
def moto_url(_moto_server: str) -> str:
    """The one real moto server (tests/moto_sagemaker.py: ThreadedMotoServer, with the SageMaker behaviours
    moto lacks), its URL; started once per session, and reset for each module, as a server of its own."""
    from tests.moto_sagemaker import reset

    reset(_moto_server)
    return _moto_server


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from patientinsight.records.synthetic import write_sample

    return write_sample(tmp_path_factory.mktemp("sample") / "pmc_patients_sample.csv")


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    from patientinsight.embedding.encoder import Embedder
    from patientinsight.embedding.model import PACKAGED_MODEL

    return Embedder(PACKAGED_MODEL, strategy="chunk", chunk_tokens=64, chunk_overlap=16)


@pytest.fixture(scope="session", autouse=True)
def model_cache() -> Path:
    """The session's model cache made once, before any test starts a service or a worker: the default
    encoder (OpenVINO int8 where the CPU has VNNI) is otherwise calibrated by the first process that needs
    it, inside some test's start-up timeout."""
    from patientinsight.embedding.prepare import prepare
    from patientinsight.settings import get_settings

    prepare()
    return get_settings().model_cache
