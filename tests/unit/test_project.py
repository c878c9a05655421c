"""Project-level checks: the README documents every setting, the Dockerfile passes hadolint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from patientinsight.settings import Settings


def test_readme_lists_every_setting(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`PATIENTINSIGHT_{name.upper()}`" not in readme]
    assert missing == []


def test_dockerfile_passes_hadolint(repo_root: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(repo_root / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_airflow_settings_convert_to_import_files(repo_root: Path) -> None:
    import yaml

    from patientinsight.airflow.astro_settings import to_import_files

    files = to_import_files(yaml.safe_load((repo_root / "airflow_settings.yaml").read_text()))
    assert files["connections"]["aws_default"]["conn_type"] == "aws"
    assert '"region_name": "us-east-1"' in files["connections"]["aws_default"]["extra"]
    assert files["pools"]["embedding"]["slots"] >= 1


MODULE_LINES = 400  # a module longer than this has two jobs more often than not: split it by job


def test_no_module_is_longer_than_the_house_allows(repo_root: Path) -> None:
    folders = ("include", "serving", "dags", "plugins", "lambda_trigger")
    lengths = {
        str(path.relative_to(repo_root)): len(path.read_text(encoding="utf-8").splitlines())
        for folder in folders
        for path in (repo_root / folder).rglob("*.py")
    }
    assert len(lengths) > 100, "the walk found the project's modules"
    assert {path: n for path, n in lengths.items() if n > MODULE_LINES} == {}
