"""The rollout's MLflow run: opened by `prepare`, closed with the outcome (succeeded, rolled_back,
not_ready or failed), with the image, the chart version and the release revision."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from patientinsight.rollout.helm import chart_metadata, pod_script, release_record
from patientinsight.rollout.readiness import service_url
from patientinsight.rollout.request import RolloutError, RolloutRequest
from patientinsight.settings import Settings
from patientinsight.tracking import LINK_XCOM_KEY, TrackedRun

log = logging.getLogger(__name__)

# What a failed task means for the rollout: helm_upgrade failing means helm rolled the release back
# (--atomic); verify (the readiness sensor) failing means the service never answered ready.
OUTCOME_OF_FAILED_TASK = {"helm_upgrade": "rolled_back", "verify": "not_ready"}


def begin(settings: Settings, dag_id: str, run_id: str, request: RolloutRequest) -> dict[str, Any]:
    """Open (or, on a retry, find) the run's MLflow run, record what is rolled out, and return the state
    the later tasks need, the pod's arguments included."""
    chart_dir = settings.rollout_chart_path
    chart = chart_metadata(chart_dir)
    script = pod_script(request, chart_dir, settings.rollout_helm_timeout_s)
    tracked = TrackedRun.open(settings.tracking_uri, settings.rollout_mlflow_experiment, run_id, dag_id)
    tracked.log_params(
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
        }
    )
    tracked.set_tags({"outcome": "running", "image": request.image})
    log.info("rolling out %s as release %s in %s (chart %s)", request.image, request.release, request.namespace, chart)
    return {
        "pod_arguments": [script],
        "mlflow_run_id": tracked.run_id,
        LINK_XCOM_KEY: tracked.url(settings.mlflow_ui_url),
        "image": request.image,
        "release": request.release,
        "namespace": request.namespace,
        "chart_version": chart["version"],
        "service_url": service_url(settings.rollout_service_url, request.release, request.namespace),
    }


def _record_release(tracked: TrackedRun, history: Any) -> dict[str, Any]:
    release = release_record(history)
    tracked.log_metrics({"release_revision": float(release["revision"])})
    tracked.set_tags({"release_revision": str(release["revision"]), "release_status": release["status"]})
    return release


def finish(settings: Settings, state: Mapping[str, Any], history: Any, ready: Mapping[str, Any]) -> dict[str, Any]:
    """After the service answered ready: record the deployed revision and the wait, close the run as
    succeeded."""
    tracked = TrackedRun(settings.tracking_uri, state["mlflow_run_id"])
    release = _record_release(tracked, history)
    tracked.log_metrics({"ready_seconds": ready["ready_seconds"], "ready_attempts": ready["attempts"]})
    record_outcome(settings, state, "succeeded")
    return {**release, **ready, "image": state["image"], "outcome": "succeeded"}


def record_outcome(settings: Settings, state: Mapping[str, Any] | None, outcome: str, history: Any = None) -> None:
    """Tag the MLflow run with the outcome and close it (FINISHED only when it succeeded). With the helm
    history of a release that was deployed but never answered ready, its revision is recorded too."""
    if not state:
        return  # the request was refused before a run was opened
    tracked = TrackedRun(settings.tracking_uri, state["mlflow_run_id"])
    if history is not None:
        try:
            _record_release(tracked, history)
        except RolloutError as exc:  # the run must still be closed
            log.warning("no release revision to record: %s", exc)
    tracked.set_tags({"outcome": outcome})
    tracked.log_metrics({"succeeded": 1.0 if outcome == "succeeded" else 0.0})
    if outcome == "succeeded":
        tracked.finish()
    else:
        tracked.fail()


def outcome_of_failed_task(task_id: str) -> str:
    return OUTCOME_OF_FAILED_TASK.get(task_id, "failed")
