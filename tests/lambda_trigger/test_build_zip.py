"""build_zip.py: the zip holds the function's modules alone, reproducibly, and they import without any package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import build_zip
from config import Config


def test_zip_holds_the_handler_alone_and_it_imports_without_any_package(tmp_path: Path, repo_root: Path) -> None:
    out = tmp_path / "build" / "lambda_trigger.zip"
    digest = build_zip.build(out, repo_root / "lambda_trigger")
    assert build_zip.build(out, repo_root / "lambda_trigger") == digest  # reproducible bytes
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        # The function's modules at the root, and nothing else: not this script, no folder.
        assert names == sorted(p.name for p in (repo_root / "lambda_trigger").glob("*.py") if p.name != "build_zip.py")
        assert "handler.py" in names and "build_zip.py" not in names
        archive.extractall(tmp_path / "unzipped")
    # -S: no site-packages at all. Every module imports on the standard library alone (boto3 only when used),
    # and the handler finds the others at the zip's root.
    modules = ", ".join(name.removesuffix(".py") for name in names)
    dag_id = "config.Config.from_env({'MWAA_ENV_NAME': 'env'}).dag_id"
    probe = f"import {modules}; print(handler.lambda_handler.__module__, {dag_id})"
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-s", "-c", probe], cwd=tmp_path / "unzipped", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["handler", Config.from_env({"MWAA_ENV_NAME": "env"}).dag_id]  # as the source
