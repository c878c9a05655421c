"""serving_rollout: the trigger form, the pod its KubernetesPodOperator would create (built without a
cluster, as the provider's own tests do, and validated against Kubernetes 1.33), the deferrable execute()
up to the Kubernetes API (the real operator, hook and kubernetes client talk HTTP to a stand-in API server,
tests/kube_tools.py, which records the pod they create), and the readiness sensor in reschedule mode
against a real local /readyz. There is no cluster here, so the pod is never run; the script it runs is
tested with the real helm in tests/unit/rollout/test_rollout.py."""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patientinsight.rollout import run as rollout_run
from patientinsight.rollout.helm import upgrade_command
from patientinsight.rollout.request import RolloutError, RolloutRequest
from patientinsight.settings import Settings, get_settings
from tests.helpers import mlflow_run
from tests.kube_tools import CHART, ROLLOUT_FORM, kube_api_standin, validate
from tests.readiness_server import readiness_server

PARAMS = ROLLOUT_FORM
HISTORY = [{"revision": 7, "status": "deployed", "chart": "patientinsight-serving-0.1.0", "app_version": "0.1.0"}]


class TaskStateStoreStandIn(dict[str, Any]):
    """context["task_state_store"]: what a task instance keeps across its reschedules."""

    def set(self, key: str, value: Any, **_: Any) -> None:
        self[key] = value


@dataclass
class TaskInstanceStandIn:
    """The parts of a running task instance that the operators read: ids, try number, XComs, and the
    start of a rescheduled sensor's first poke (None before its first reschedule)."""

    dag_id: str
    task_id: str
    run_id: str = "manual__2026-11-26"
    try_number: int = 1
    map_index: int = -1
    start_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)
    first_reschedule_date: datetime | None = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", default: Any = None, **_: Any) -> Any:
        return self.xcoms.get((task_ids, key), default)

    def get_first_reschedule_date(self, context: Any) -> datetime | None:
        return self.first_reschedule_date


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollout-home")  # one MLflow store for the module: creating one takes seconds


@pytest.fixture
def settings(home: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("PATIENTINSIGHT_HOME", str(home))
    monkeypatch.setenv("PATIENTINSIGHT_ROLLOUT_CHART_PATH", str(repo_root / CHART))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def dag(repo_root: Path) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(repo_root / "dags" / "serving_rollout.py"))
    assert bag.import_errors == {}
    return bag.dags["serving_rollout"]


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The kubernetes_default connection, pointing at the stand-in API server."""
    with kube_api_standin() as api:
        extra = {"kube_config_path": str(api.kubeconfig(tmp_path))}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps({"conn_type": "kubernetes", "extra": extra}))
        monkeypatch.delenv("KUBECONFIG", raising=False)
        yield api


def _context(
    dag: Any, settings: Settings, run_id: str, task_id: str = "helm_upgrade", service: str = ""
) -> dict[str, Any]:
    """A task context after `prepare` ran for real (MLflow run opened, its state pushed)."""
    task = dag.get_task(task_id)
    ti = TaskInstanceStandIn(dag_id=dag.dag_id, task_id=task.task_id, run_id=run_id)
    if service:
        settings = settings.model_copy(update={"rollout_service_url": service})
    state = rollout_run.begin(settings, dag.dag_id, ti.run_id, RolloutRequest.from_params(PARAMS))
    for key, value in state.items():
        ti.xcoms[("prepare", key)] = value
    ti.xcoms[("prepare", "return_value")] = state
    return {
        "ti": ti, "task_instance": ti, "run_id": ti.run_id, "dag": dag, "task": task, "params": PARAMS,
        "task_state_store": TaskStateStoreStandIn(),
    }  # fmt: skip


def _rendered_operator(dag: Any, settings: Settings, run_id: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    context = _context(dag, settings, run_id, **kwargs)
    task = copy.deepcopy(context["task"])  # a fresh operator: it caches its hook and client
    context["task"] = task
    task.render_template_fields(context)  # resolves prepare's XComs (pod arguments, service URL)
    return task, context


def _poke(dag: Any, context: dict[str, Any]) -> Any:
    """One run of the verify sensor as the worker starts it: a new operator (a new process), the same
    task instance and state store."""
    task = copy.deepcopy(dag.get_task("verify"))
    task.render_template_fields(context)
    return task.execute(context)


def _form(dag: Any, **conf: Any) -> dict[str, Any]:
    """The trigger form's values as Airflow validates them (ParamValidationError when refused)."""
    params = copy.deepcopy(dag.params)
    for key, value in conf.items():
        params[key] = value
    return dict(params.validate())


def test_the_form_with_a_tag_is_a_request_and_needs_the_tag(dag: Any, repo_root: Path) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    request = RolloutRequest.from_params(_form(dag, image_tag="3f2c1ab"))  # the defaults and a tag
    assert request.values_file == "values-production.yaml"
    assert (repo_root / CHART / request.values_file).is_file()  # the form's default is in the chart
    with pytest.raises(ParamValidationError, match="image_tag"):
        _form(dag)  # no default tag: a rollout names its image


@pytest.mark.parametrize(
    "change",
    [{"image_tag": "v1;rm -rf /"}, {"release": "Serving_1"}, {"namespace": "a" * 64}, {"values_file": "../x.yaml"}],
)
def test_the_form_refuses_what_the_request_refuses(dag: Any, change: dict[str, Any]) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        _form(dag, **change)
    with pytest.raises(RolloutError):  # an API trigger that skips the form is refused by prepare
        RolloutRequest.from_params({**PARAMS, **change})


def test_the_pod_built_without_a_cluster(dag: Any, settings: Settings, standin: Any) -> None:
    task, context = _rendered_operator(dag, settings, "manual__pod")
    pod = task.build_pod_request_obj(context)
    container = next(c for c in pod.spec.containers if c.name == "base")
    assert container.image == settings.rollout_pod_image
    assert container.command == ["/bin/sh", "-c"]
    (script,) = container.args
    upgrade = upgrade_command(RolloutRequest.from_params(PARAMS), settings.rollout_chart_path, 600)
    assert shlex.join(upgrade) in script
    assert "image.tag=3f2c1ab" in script and "--atomic --wait --timeout 600s" in script
    assert pod.spec.service_account_name == "patientinsight-rollout"
    assert pod.metadata.namespace == "airflow"
    assert container.resources.requests == {"cpu": "100m", "memory": "128Mi"}
    assert container.resources.limits == {"cpu": "500m", "memory": "512Mi"}
    assert pod.spec.security_context.run_as_non_root is True
    assert [c.name for c in pod.spec.containers] == ["base", "airflow-xcom-sidecar"]  # the revision comes back
    assert (pod.metadata.labels["dag_id"], pod.metadata.labels["run_id"]) == ("serving_rollout", "manual__pod")
    assert pod.metadata.labels["airflow_kpo_in_cluster"] == "False"  # the connection's kubeconfig was used
    assert standin.requests == []  # building the pod talks to no API server

    from kubernetes.client import ApiClient

    validate(ApiClient().sanitize_for_serialization(pod))


def test_deferrable_execute_creates_the_pod_and_defers_to_the_pod_trigger(
    dag: Any, settings: Settings, standin: Any
) -> None:
    from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
    from airflow.sdk.exceptions import TaskDeferred

    task, context = _rendered_operator(dag, settings, "manual__defer")
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)

    trigger = deferred.value.trigger
    assert isinstance(trigger, KubernetesPodTrigger)
    # The wait for helm is bounded: the deferral ends a little after helm's own timeout and the pod's start.
    bound = timedelta(seconds=settings.rollout_helm_timeout_s)
    assert bound < deferred.value.timeout <= task.execution_timeout + timedelta(minutes=2)
    assert deferred.value.method_name == "trigger_reentry"
    posts = [r for r in standin.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/api/v1/namespaces/airflow/pods"]
    created = posts[0]["body"]
    assert (trigger.pod_name, trigger.pod_namespace) == (created["metadata"]["name"], "airflow")
    assert trigger.kubernetes_conn_id == "kubernetes_default"
    lookups = [r for r in standin.requests if r["method"] == "GET"]
    assert "dag_id=serving_rollout" in lookups[0]["query"]["labelSelector"][0]  # reattach check came first
    assert context["ti"].xcoms[("helm_upgrade", "pod_name")] == created["metadata"]["name"]
    validate(created)  # what reached the API server is a valid Kubernetes 1.33 pod


def test_failure_callback_closes_the_mlflow_run(dag: Any, settings: Settings) -> None:
    """helm_upgrade failing (helm rolled back) closes the run FAILED with outcome rolled_back."""
    context = _context(dag, settings, "manual__failed")
    state = context["ti"].xcom_pull(task_ids="prepare")
    dag.get_task("helm_upgrade").on_failure_callback[0](context)
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["outcome"] == "rolled_back"
    assert run.data.params["image_tag"] == "3f2c1ab"


def test_verify_reschedules_until_ready_twice_in_a_row_then_finish_closes_the_run(dag: Any, settings: Settings) -> None:
    """Each poke probes once and frees the worker until the next; the streak survives the reschedules,
    and a lucky 200 between two 503s does not count. `finish` then records the wait and the revision."""
    from airflow.sdk.exceptions import AirflowRescheduleException

    with readiness_server(not_ready_first=1, then_not_ready=[2]) as (url, answers):
        context = _context(dag, settings, "manual__ready", task_id="verify", service=url)
        interval = timedelta(seconds=settings.rollout_verify_interval_s)
        reschedules = 0
        for _ in range(10):
            poked_at = datetime.now(UTC)
            try:
                ready = _poke(dag, context)
                break
            except AirflowRescheduleException as exc:  # the slot is free until the next poke
                assert exc.reschedule_date >= poked_at + interval
                reschedules += 1
                context["ti"].first_reschedule_date = context["ti"].first_reschedule_date or poked_at
    assert answers == [503, 200, 503, 200, 200] and reschedules == 4
    assert ready["attempts"] == 5

    state = context["ti"].xcom_pull(task_ids="prepare")
    dag.get_task("finish").python_callable(state, HISTORY, ready)
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert (run.info.status, run.data.tags["outcome"]) == ("FINISHED", "succeeded")
    assert run.data.metrics["release_revision"] == 7 and run.data.metrics["ready_attempts"] == 5


def test_a_retried_verify_starts_its_streak_afresh(dag: Any, settings: Settings) -> None:
    """The state store outlives a try: a retry must not count the last try's ready answer as its own."""
    from airflow.sdk.exceptions import AirflowRescheduleException

    with readiness_server(not_ready_first=0) as (url, answers):
        context = _context(dag, settings, "manual__retried", task_id="verify", service=url)
        with pytest.raises(AirflowRescheduleException):
            _poke(dag, context)  # try 1: one ready answer, then the try ends (say, its worker died)
        context["ti"].try_number = 2
        context["ti"].first_reschedule_date = None
        with pytest.raises(AirflowRescheduleException):
            _poke(dag, context)  # try 2's first ready answer is one in a row, not two
        ready = _poke(dag, context)
    assert answers == [200, 200, 200] and ready["attempts"] == 2


def test_verify_times_out_and_the_run_is_closed_not_ready(dag: Any, settings: Settings) -> None:
    """A service that never answers ready: once the sensor's timeout has passed since its first poke it
    fails (a sensor timeout, which Airflow does not retry), saying what the service answered; the
    callback closes the MLflow run as not_ready, with the revision helm deployed."""
    from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSensorTimeout

    with readiness_server(not_ready_first=-1) as (url, _):
        context = _context(dag, settings, "manual__not_ready", task_id="verify", service=url)
        with pytest.raises(AirflowRescheduleException):
            _poke(dag, context)
        waited = timedelta(seconds=settings.rollout_verify_timeout_s + 1)
        context["ti"].first_reschedule_date = datetime.now(UTC) - waited
        timeout = f"{settings.rollout_verify_timeout_s:g}s"
        message = rf"{url}/readyz did not answer ready within {timeout} \(2 checks, last: HTTP 503\)"
        with pytest.raises(AirflowSensorTimeout, match=message):
            _poke(dag, context)

    context["ti"].xcoms[("helm_upgrade", "return_value")] = HISTORY
    dag.get_task("verify").on_failure_callback[0](context)
    state = context["ti"].xcom_pull(task_ids="prepare")
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", "not_ready")
    assert run.data.metrics["release_revision"] == 7
