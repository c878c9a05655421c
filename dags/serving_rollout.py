"""
### serving_rollout

Rolls a new serving image out to Kubernetes: a pod (KubernetesPodOperator, deferrable) runs
`helm upgrade --install --atomic --wait --timeout ...` of the `patientinsight-serving` chart with the new
image tag. A release whose pods do not become ready in time is rolled back by helm, so the old version
keeps serving. Then `verify`, a sensor in reschedule mode, checks `/readyz` through the Service until it
answers ready twice in a row, and fails the run if it never does; `finish` records the release revision.
One MLflow run per DAG run (experiment `serving_rollout`): image, chart version, release revision
and outcome (`succeeded`, `rolled_back`, `not_ready`).

The chart is baked into the Airflow image, and the pod runs that image (it carries helm): the DAG and the
chart come from one build, and the pod needs no chart-registry credentials.

From CI/CD: `POST /api/v2/dags/serving_rollout/dagRuns` with
`{"logical_date": null, "conf": {"image_repository": "...", "image_tag": "<git sha>"}}` (see helm/README.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import models as k8s

from patientinsight.airflow.defaults import dag_arguments, share_mlflow_link
from patientinsight.airflow.sensors import ServiceReadySensor
from patientinsight.rollout import run as rollout_run
from patientinsight.rollout.request import RolloutError, RolloutRequest
from patientinsight.settings import get_settings

SETTINGS = get_settings()


def _on_failure(context: Any) -> None:
    """Close the run's MLflow run with the outcome that the failed task stands for, and the revision
    helm deployed when it got that far (a release that never answered ready)."""
    ti = context["ti"]
    outcome = rollout_run.outcome_of_failed_task(ti.task_id)
    history = ti.xcom_pull(task_ids="helm_upgrade")
    rollout_run.record_outcome(get_settings(), ti.xcom_pull(task_ids="prepare"), outcome, history)


# One run at a time: two helm upgrades of one release at once fail ("another operation is in progress").
@dag(
    **dag_arguments(
        "serving_rollout",
        description="Roll the query service out to Kubernetes with helm (rolled back if not ready), verify /readyz",
        owner="data-engineering",
        tags=["serving", "deploy"],
        doc_md=__doc__,
        on_failure=_on_failure,
        retry_delay=timedelta(minutes=1),
    ),
    params={
        "image_repository": Param(
            SETTINGS.serving_image_repository,
            type="string",
            minLength=1,
            title="Image repository",
            description="The serving image's repository, without the tag (e.g. the ECR repository).",
        ),
        "image_tag": Param(
            "",
            type="string",
            pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
            title="Image tag",
            description="The immutable tag to roll out (e.g. the git commit the CI built).",
        ),
        "release": Param(
            "patientinsight-serving",
            type="string",
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            maxLength=53,
            title="Release name",
            description="Helm release; also the name of the Service that the verification calls.",
        ),
        "namespace": Param(
            "patientinsight",
            type="string",
            pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            maxLength=63,
            title="Namespace",
        ),
        "values_file": Param(
            "values-production.yaml",
            type="string",
            enum=["", "values-production.yaml"],
            title="Values file",
            description="A values file of the chart (empty: the chart's defaults).",
        ),
        "extra_values": Param(
            {},
            type="object",
            title="Extra values",
            description='Chart values on top, as JSON, e.g. {"replicaCount": 4}. Not "image".',
        ),
    },
)
def serving_rollout() -> None:
    @task(multiple_outputs=True)
    def prepare() -> dict[str, Any]:
        context = get_current_context()
        try:
            request = RolloutRequest.from_params(context["params"])
        except RolloutError as exc:
            raise AirflowFailException(str(exc)) from exc  # a bad request fails the same way again: no retry
        state = rollout_run.begin(get_settings(), context["dag"].dag_id, context["run_id"], request)
        share_mlflow_link(context, state)
        return state

    prepared = prepare()

    helm_upgrade = KubernetesPodOperator(
        task_id="helm_upgrade",
        name="serving-rollout",
        namespace=SETTINGS.rollout_pod_namespace,
        image=SETTINGS.rollout_pod_image,
        cmds=["/bin/sh", "-c"],
        arguments=prepared["pod_arguments"],
        service_account_name=SETTINGS.rollout_service_account,
        kubernetes_conn_id=SETTINGS.kubernetes_conn_id,  # no such connection: the in-cluster config
        deferrable=True,  # the wait for helm sits in the triggerer, not in a worker slot
        do_xcom_push=True,  # the pod writes `helm history` to /airflow/xcom/return.json: the revision
        get_logs=True,
        on_finish_action="delete_succeeded_pod",  # a failed pod stays for `kubectl logs`
        labels={"app.kubernetes.io/name": "patientinsight-rollout", "app.kubernetes.io/part-of": "patientinsight"},
        env_vars={"HOME": "/tmp", "HELM_CACHE_HOME": "/tmp/helm/cache", "HELM_CONFIG_HOME": "/tmp/helm/config"},
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "100m", "memory": "128Mi"}, limits={"cpu": "500m", "memory": "512Mi"}
        ),
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=50000, seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False, capabilities=k8s.V1Capabilities(drop=["ALL"])
        ),
        startup_timeout_seconds=600,  # a node without the Airflow image pulls it first
        # Also bounds the deferral: the operator defers with a timeout just past this deadline.
        execution_timeout=timedelta(seconds=SETTINGS.rollout_helm_timeout_s + 900),
    )

    # Reschedule mode: the worker slot is free between probes. A timeout fails at once (Airflow does not
    # retry a sensor timeout), and _on_failure closes the MLflow run as not_ready.
    verify = ServiceReadySensor(
        task_id="verify",
        url=prepared["service_url"],
        poke_interval=SETTINGS.rollout_verify_interval_s,
        timeout=SETTINGS.rollout_verify_timeout_s,
    )
    helm_upgrade >> verify

    @task
    def finish(state: dict[str, Any], history: Any, ready: dict[str, Any]) -> dict[str, Any]:
        return rollout_run.finish(get_settings(), state, history, ready)

    finish(prepared, helm_upgrade.output, verify.output)


serving_rollout()
