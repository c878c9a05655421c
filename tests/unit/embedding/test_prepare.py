"""The serving image's build step that makes the model cache, run as the Dockerfile runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import dockerfile_stage

PREPARE = "python -m patientinsight.embedding.prepare"


def test_the_image_build_prepares_the_model_cache(repo_root: Path, tmp_path: Path) -> None:
    stage = dockerfile_stage((repo_root / "Dockerfile").read_text(), "serving")
    assert PREPARE in stage and "PATIENTINSIGHT_MODEL_CACHE_DIR=/opt/patientinsight/models" in stage
    env = {
        **os.environ,
        "PATIENTINSIGHT_MODEL_CACHE_DIR": str(tmp_path / "models"),
        "PATIENTINSIGHT_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, *PREPARE.split()[1:]], env=env, capture_output=True, text=True, timeout=600, check=True
    )
    assert "onnx fp32, onnx int8, openvino fp32, openvino int8, choice " in done.stderr
    assert len(list((tmp_path / "models").glob("*.onnx"))) == 2  # fp32 and its int8 quantization
    # the measured choice of 'auto' for this machine, so that a process of the image reads it
    assert len(list((tmp_path / "models" / "embedding-choice").glob("*.json"))) == 1
    assert len(list((tmp_path / "models").glob("*.openvino/model.xml"))) == 1
    assert len(list((tmp_path / "models").glob("*.openvino-int8-*/model.xml"))) == 1
    assert not list((tmp_path / "models").glob(".*.tmp"))  # every temporary file or folder renamed or removed
