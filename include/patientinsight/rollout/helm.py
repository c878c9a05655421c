"""The serving_rollout DAG's logic, without Airflow: the request from the trigger form, the helm command
the rollout pod runs, the readiness check through the Service, and the rollout's MLflow run.

The chart reaches the pod inside the Airflow image (see the Dockerfile): the DAG that builds the command
and the chart it installs come from one build, so they cannot drift apart, the chart version recorded in
MLflow is read from the very Chart.yaml that the pod installs, and the pod needs no registry credentials
beyond the ones the nodes already use to pull the Airflow image.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from patientinsight import tracking
from patientinsight.settings import Settings

log = logging.getLogger(__name__)

RUN_TAG = "airflow.run_id"
XCOM_RETURN = "/airflow/xcom/return.json"  # the KubernetesPodOperator's sidecar reads the pod's result here
HISTORY_MAX = "10"  # release revisions kept by helm (each is a Secret in the namespace)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_REPOSITORY = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_VALUES_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.ya?ml$")


class RolloutError(ValueError):
    """The request cannot be rolled out as given (the same request fails again: no retry)."""


class RolloutNotReady(RuntimeError):
    """The service did not answer ready through its Service within the time allowed."""


@dataclass(frozen=True)
class RolloutRequest:
    image_repository: str
    image_tag: str
    release: str
    namespace: str
    values_file: str = ""
    extra_values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"{self.image_repository}:{self.image_tag}"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RolloutRequest:
        """Check the trigger form's values; an API trigger bypasses the form, so check again here."""
        request = cls(
            image_repository=str(params["image_repository"]).strip(),
            image_tag=str(params["image_tag"]).strip(),
            release=str(params["release"]).strip(),
            namespace=str(params["namespace"]).strip(),
            values_file=str(params.get("values_file") or "").strip(),
            extra_values=dict(params.get("extra_values") or {}),
        )
        request.check()
        return request

    def check(self) -> None:
        problems = []
        if not _REPOSITORY.match(self.image_repository):
            problems.append(f"image_repository {self.image_repository!r} is not an image repository")
        if not _TAG.match(self.image_tag):
            problems.append(f"image_tag {self.image_tag!r} is not a valid image tag")
        if self.image_tag == "latest":
            problems.append("image_tag 'latest' is not reproducible: roll out an immutable tag")
        if len(self.release) > 53 or not _DNS_LABEL.match(self.release):
            problems.append(f"release {self.release!r}: lowercase letters, digits and '-', at most 53 characters")
        if len(self.namespace) > 63 or not _DNS_LABEL.match(self.namespace):
            problems.append(f"namespace {self.namespace!r} is not a valid namespace name")
        if self.values_file and not _VALUES_FILE.match(self.values_file):
            problems.append(f"values_file {self.values_file!r}: a values file name inside the chart folder")
        if "image" in self.extra_values:
            problems.append("extra_values must not set 'image': use image_repository and image_tag")
        if problems:
            raise RolloutError("; ".join(problems))


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


def service_url(template: str, release: str, namespace: str) -> str:
    return template.format(release=release, namespace=namespace).rstrip("/")


def _probe(url: str, timeout_s: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def wait_ready(
    base_url: str,
    timeout_s: float,
    interval_s: float,
    consecutive: int = 2,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll GET <base_url>/readyz until it answers 200 `consecutive` times in a row (one lucky answer
    from a pod that is about to fail its probe does not count), or raise RolloutNotReady at the deadline."""
    url = f"{base_url}/readyz"
    start = clock()
    deadline = start + timeout_s
    attempts = streak = 0
    last = "no answer"
    while True:
        attempts += 1
        ok, last = _probe(url, timeout_s=min(5.0, max(0.5, deadline - clock())))
        streak = streak + 1 if ok else 0
        log.info("readiness %s: %s (attempt %d, %d in a row)", url, last, attempts, streak)
        if streak >= consecutive:
            return {"ready_seconds": round(clock() - start, 3), "attempts": attempts}
        if clock() + interval_s > deadline:
            raise RolloutNotReady(f"{url} did not answer ready within {timeout_s:g}s ({attempts} checks, last: {last})")
        time.sleep(interval_s)


# --- the rollout's MLflow run ------------------------------------------------------------------


def _set_tags(tracking_uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def begin(settings: Settings, dag_id: str, run_id: str, request: RolloutRequest) -> dict[str, Any]:
    """Open (or, on a retry, find) the run's MLflow run, record what is rolled out, and return the state
    the later tasks need, the pod's arguments included."""
    chart_dir = settings.rollout_chart_path
    chart = chart_metadata(chart_dir)
    script = pod_script(request, chart_dir, settings.rollout_helm_timeout_s)
    uri, experiment = settings.tracking_uri, settings.rollout_mlflow_experiment
    mlflow_run = tracking.find_run(uri, experiment, RUN_TAG, run_id) or tracking.start_run(
        uri, experiment, run_id, {RUN_TAG: run_id, "airflow.dag_id": dag_id}
    )
    tracking.log_params(
        uri,
        mlflow_run,
        {
            "image": request.image,
            "image_repository": request.image_repository,
            "image_tag": request.image_tag,
            "chart_name": chart["name"],
            "chart_version": chart["version"],
            "release": request.release,
            "namespace": request.namespace,
            "values_file": request.values_file or "(chart defaults)",
            "extra_values": json.dumps(dict(request.extra_values), sort_keys=True),
        },
    )
    _set_tags(uri, mlflow_run, {"outcome": "running", "image": request.image})
    log.info("rolling out %s as release %s in %s (chart %s)", request.image, request.release, request.namespace, chart)
    return {
        "pod_arguments": [script],
        "mlflow_run_id": mlflow_run,
        "mlflow_run_url": f"{settings.mlflow_ui_url.rstrip('/')}/#/runs/{mlflow_run}",
        "image": request.image,
        "release": request.release,
        "namespace": request.namespace,
        "chart_version": chart["version"],
        "service_url": service_url(settings.rollout_service_url, request.release, request.namespace),
    }


def verify(settings: Settings, state: Mapping[str, Any], history: Any) -> dict[str, Any]:
    """Record the deployed revision, then check readiness through the Service and close the MLflow run
    as succeeded; raise RolloutNotReady when the service never answers ready."""
    uri, run_id = settings.tracking_uri, state["mlflow_run_id"]
    release = release_record(history)
    tracking.log_metrics(uri, run_id, {"release_revision": float(release["revision"])})
    _set_tags(uri, run_id, {"release_revision": str(release["revision"]), "release_status": release["status"]})
    # RolloutNotReady propagates: the DAG's failure callback closes the run as not_ready after the last try.
    ready = wait_ready(state["service_url"], settings.rollout_verify_timeout_s, settings.rollout_verify_interval_s)
    tracking.log_metrics(uri, run_id, {"ready_seconds": ready["ready_seconds"], "ready_attempts": ready["attempts"]})
    record_outcome(settings, state, "succeeded")
    return {**release, **ready, "image": state["image"], "outcome": "succeeded"}


def record_outcome(settings: Settings, state: Mapping[str, Any] | None, outcome: str) -> None:
    """Tag the MLflow run with the outcome and close it (FINISHED only when it succeeded)."""
    if not state:
        return  # the request was refused before a run was opened
    uri, run_id = settings.tracking_uri, state["mlflow_run_id"]
    _set_tags(uri, run_id, {"outcome": outcome})
    tracking.log_metrics(uri, run_id, {"succeeded": 1.0 if outcome == "succeeded" else 0.0})
    tracking.end_run(uri, run_id, "FINISHED" if outcome == "succeeded" else "FAILED")


def outcome_of_failed_task(task_id: str) -> str:
    """helm_upgrade failing means helm rolled the release back (--atomic); verify failing means not ready."""
    return {"helm_upgrade": "rolled_back", "verify": "not_ready"}.get(task_id, "failed")
