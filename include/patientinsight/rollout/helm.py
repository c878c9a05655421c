"""The helm side of a rollout: the command the rollout pod runs, and the release revision it reports.

The chart reaches the pod inside the Airflow image (see the Dockerfile): the DAG that builds the command
and the chart it installs come from one build, so they cannot drift apart, the chart version recorded in
MLflow is read from the very Chart.yaml that the pod installs, and the pod needs no registry credentials
beyond the ones the nodes already use to pull the Airflow image.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from patientinsight.rollout.request import RolloutError, RolloutRequest

XCOM_RETURN = "/airflow/xcom/return.json"  # the KubernetesPodOperator's sidecar reads the pod's result here
HISTORY_MAX = "10"  # release revisions kept by helm (each is a Secret in the namespace)


def chart_metadata(chart_dir: Path) -> dict[str, str]:
    """Name, version and appVersion from the chart's Chart.yaml."""
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    return {"name": str(meta["name"]), "version": str(meta["version"]), "app_version": str(meta.get("appVersion", ""))}


def value_args(request: RolloutRequest, chart_dir: Path) -> list[str]:
    """The values part of the helm command, shared by `helm upgrade` and `helm template` (the tests)."""
    args: list[str] = []
    if request.values_file:
        values = chart_dir / request.values_file
        if not values.is_file():
            raise RolloutError(f"values_file {request.values_file!r} is not in the chart {chart_dir}")
        args += ["--values", str(values)]
    if request.extra_values:
        args += ["--set-json", json.dumps(dict(request.extra_values), sort_keys=True)]
    # The image last, so that nothing else can change what is recorded as rolled out.
    args += ["--set-string", f"image.repository={request.image_repository}"]
    args += ["--set-string", f"image.tag={request.image_tag}"]
    return args


def upgrade_command(request: RolloutRequest, chart_dir: Path, timeout_s: int) -> list[str]:
    """`helm upgrade --install --atomic --wait`: a release whose pods are not ready within the timeout is
    rolled back to the previous revision, so a failed rollout leaves the old version serving. (Helm 4
    names --atomic --rollback-on-failure and keeps --atomic as its alias; Helm 3 knows only --atomic.)"""
    return [
        "helm", "upgrade", "--install", request.release, str(chart_dir),
        "--namespace", request.namespace,
        "--atomic", "--wait", "--timeout", f"{timeout_s}s",
        "--history-max", HISTORY_MAX,
        *value_args(request, chart_dir),
    ]  # fmt: skip


def history_command(request: RolloutRequest) -> list[str]:
    return ["helm", "history", request.release, "--namespace", request.namespace, "--max", "1", "--output", "json"]


def pod_script(request: RolloutRequest, chart_dir: Path, timeout_s: int) -> str:
    """What the rollout pod runs with /bin/sh -c: the upgrade, then the deployed revision as the pod's
    XCom. Every argument is shell-quoted; the form's values never reach the shell unquoted."""
    upgrade = shlex.join(upgrade_command(request, chart_dir, timeout_s))
    history = shlex.join(history_command(request))
    return f"set -eu; {upgrade}; mkdir -p {shlex.quote(str(Path(XCOM_RETURN).parent))}; {history} > {XCOM_RETURN}"


def release_record(history: Any) -> dict[str, Any]:
    """The revision that `helm history --max 1 -o json` reported, e.g. {"revision": 3, "status": "deployed"}."""
    entries = history if isinstance(history, list) else [history]
    if not entries or not isinstance(entries[-1], Mapping) or "revision" not in entries[-1]:
        raise RolloutError(f"the rollout pod returned no release revision: {history!r}")
    last = entries[-1]
    return {
        "revision": int(last["revision"]),
        "status": str(last.get("status", "")),
        "chart": str(last.get("chart", "")),
        "app_version": str(last.get("app_version", "")),
    }
