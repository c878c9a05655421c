"""serving_rollout: the DAG's form and wiring, the pod its KubernetesPodOperator would create (built without
a cluster, as the provider's own tests do, and validated against Kubernetes 1.33), and the deferrable
execute() up to the Kubernetes API: the real operator, hook and kubernetes client talk HTTP to a stand-in
API server (tests/kube_tools.py), which records the pod they create. There is no cluster here, so the
pod is never run; the script it runs is tested with the real helm in tests/unit/test_rollout.py."""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from patientinsight.rollout import helm as rollout
from patientinsight.settings import Settings, get_settings
from tests.helpers import mlflow_run
from tests.kube_tools import CHART, kube_api_standin, validate

PARAMS = {
    "image_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/patientinsight-serving",
    "image_tag": "3f2c1ab",
    "release": "patientinsight-serving",
    "namespace": "patientinsight",
    "values_file": "values-production.yaml",
    "extra_values": {},
}


@dataclass
class TaskInstanceStandIn:
    """The parts of a running task instance that the operator reads: ids, try number, XComs."""

    dag_id: str
    task_id: str
    run_id: str = "manual__2026-11-26"
    try_number: int = 1
    map_index: int = -1
    start_date: datetime = field(default_factory=lambda: datetime.now(UTC))
    xcoms: dict[tuple[str, str], Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", default: Any = None, **_: Any) -> Any:
        return self.xcoms.get((task_ids, key), default)


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


def _context(dag: Any, settings: Settings, run_id: str) -> dict[str, Any]:
    """A task context after `prepare` ran for real (MLflow run opened, pod arguments pushed)."""
    task = dag.get_task("helm_upgrade")
    ti = TaskInstanceStandIn(dag_id=dag.dag_id, task_id=task.task_id, run_id=run_id)
    state = rollout.begin(settings, dag.dag_id, ti.run_id, rollout.RolloutRequest.from_params(PARAMS))
    for key, value in state.items():
        ti.xcoms[("prepare", key)] = value
    ti.xcoms[("prepare", "return_value")] = state
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id, "dag": dag, "task": task, "params": PARAMS}


def _rendered_operator(dag: Any, settings: Settings, run_id: str) -> tuple[Any, dict[str, Any]]:
    context = _context(dag, settings, run_id)
    task = copy.deepcopy(dag.get_task("helm_upgrade"))  # a fresh operator: it caches its hook and client
    context["task"] = task
    task.render_template_fields(context)  # resolves the pod arguments from prepare's XCom
    return task, context


def test_form_tasks_and_operator(dag: Any) -> None:
    assert set(dag.params) == {"image_repository", "image_tag", "release", "namespace", "values_file", "extra_values"}
    assert dag.max_active_runs == 1
    assert {t.task_id for t in dag.tasks} == {"prepare", "helm_upgrade", "verify"}
    assert dag.get_task("verify").upstream_task_ids == {"prepare", "helm_upgrade"}
    pod_task = dag.get_task("helm_upgrade")
    assert pod_task.deferrable is True and pod_task.do_xcom_push is True
    assert pod_task.kubernetes_conn_id == "kubernetes_default"


def test_the_pod_built_without_a_cluster(dag: Any, settings: Settings, standin: Any) -> None:
    task, context = _rendered_operator(dag, settings, "manual__pod")
    pod = task.build_pod_request_obj(context)
    container = next(c for c in pod.spec.containers if c.name == "base")
    assert container.image == settings.rollout_pod_image
    assert container.command == ["/bin/sh", "-c"]
    (script,) = container.args
    upgrade = rollout.upgrade_command(rollout.RolloutRequest.from_params(PARAMS), settings.rollout_chart_path, 600)
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
