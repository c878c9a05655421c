"""patientinsight.rollout without Airflow: the request checks, the helm command (parsed and rendered by the
real helm), the readiness rule against a real local HTTP server, and the rollout's MLflow run in a real
MLflow store. The readiness sensor itself runs in tests/dags/test_serving_rollout.py."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from patientinsight.rollout import run as rollout_run
from patientinsight.rollout.helm import XCOM_RETURN, pod_script, release_record, upgrade_command, value_args
from patientinsight.rollout.readiness import Readiness, check
from patientinsight.rollout.request import RolloutError, RolloutRequest
from patientinsight.settings import Settings
from patientinsight.tracking import LINK_XCOM_KEY
from tests.helpers import mlflow_run
from tests.kube_tools import CHART, ROLLOUT_FORM, by_kind, helm, helm_binary, render
from tests.readiness_server import readiness_server

PARAMS = {**ROLLOUT_FORM, "extra_values": {"replicaCount": 4, "autoscaling": {"enabled": False}}}
HISTORY = [
    {
        "revision": 7,
        "updated": "2026-11-26T10:00:00Z",
        "status": "deployed",
        "chart": "patientinsight-serving-0.1.0",
        "app_version": "0.1.0",
        "description": "Upgrade complete",
    }
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Settings:
    return Settings(
        home=tmp_path_factory.mktemp("rollout-home"),  # one MLflow store for the module: creating one takes seconds
        rollout_chart_path=repo_root / CHART,
    )


def test_request_from_the_form() -> None:
    request = RolloutRequest.from_params(PARAMS)
    assert request.image == f"{PARAMS['image_repository']}:3f2c1ab"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_tag": "latest"}, "not reproducible"),
        ({"image_tag": "v1;rm -rf /"}, "not a valid image tag"),
        ({"image_repository": "Bad/Repo"}, "not an image repository"),
        ({"release": "Serving_1"}, "release 'Serving_1'"),
        ({"namespace": "a" * 64}, "not a valid namespace"),
        ({"values_file": "../../etc/passwd"}, "values file name"),
        ({"extra_values": {"image": {"tag": "other"}}}, "must not set 'image'"),
    ],
)
def test_a_bad_request_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RolloutError, match=message):
        RolloutRequest.from_params({**PARAMS, **change})


def test_upgrade_command_is_atomic_and_waits(repo_root: Path) -> None:
    request = RolloutRequest.from_params(PARAMS)
    command = upgrade_command(request, repo_root / CHART, 600)
    assert command[:5] == ["helm", "upgrade", "--install", "patientinsight-serving", str(repo_root / CHART)]
    assert {"--atomic", "--wait"} <= set(command)
    assert command[command.index("--timeout") + 1] == "600s"
    assert command[command.index("--namespace") + 1] == "patientinsight"
    assert command[-4:] == ["--set-string", f"image.repository={PARAMS['image_repository']}",
                            "--set-string", "image.tag=3f2c1ab"]  # fmt: skip


def test_the_values_render_with_the_real_helm(repo_root: Path) -> None:
    """The very values arguments of the upgrade, given to `helm template`: image, overlay and extra values land."""
    request = RolloutRequest.from_params(PARAMS)
    docs = by_kind(render(repo_root, *value_args(request, repo_root / CHART)))
    deployment = docs["Deployment"][0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == request.image
    assert deployment["spec"]["replicas"] == 4  # extra_values: autoscaling off, 4 replicas
    assert "HorizontalPodAutoscaler" not in docs
    assert "ServiceMonitor" in docs  # values-production.yaml


def test_the_pod_script_quotes_every_argument(repo_root: Path) -> None:
    hostile = {"podAnnotations": {"note": "it's; echo pwned > /tmp/x $(id)"}}
    request = RolloutRequest.from_params({**PARAMS, "extra_values": hostile})
    script = pod_script(request, repo_root / CHART, 600)
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    upgrade = upgrade_command(request, repo_root / CHART, 600)
    start = tokens.index("upgrade") - 1
    assert tokens[start : start + len(upgrade)] == upgrade
    assert tokens[start + len(upgrade)] == ";"
    assert tokens[-2:] == [">", XCOM_RETURN]


def test_the_pod_script_runs_and_helm_accepts_every_flag(repo_root: Path, tmp_path: Path) -> None:
    """The script as the pod runs it, with the real /bin/sh and helm, against a cluster that is not there:
    helm must get past flag parsing to the cluster, and the script must stop there with helm's status."""
    request = RolloutRequest.from_params(PARAMS)
    script = pod_script(request, repo_root / CHART, 600)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    env = {**os.environ, "PATH": f"{helm_binary(repo_root).parent}:{os.environ['PATH']}",
           "KUBECONFIG": str(kubeconfig), "HELM_CACHE_HOME": str(tmp_path / "cache")}  # fmt: skip
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert "unknown flag" not in result.stderr
    assert "cluster unreachable" in result.stderr or "connection refused" in result.stderr, result.stderr


def test_helm_refuses_a_flag_it_does_not_know(repo_root: Path) -> None:
    """The check above could not fail if helm ignored unknown flags."""
    result = helm(repo_root, "upgrade", "--install", "x", str(repo_root / CHART), "--atomik", check=False)
    assert result.returncode != 0 and "unknown flag: --atomik" in result.stderr


def test_release_record() -> None:
    assert release_record(HISTORY)["revision"] == 7
    with pytest.raises(RolloutError, match="no release revision"):
        release_record(None)


def probes_until_ready(url: str, most: int) -> Readiness:
    """Probe as the sensor's pokes do, each from what the previous ones saved, until ready or `most`."""
    seen = Readiness()
    while not seen.ready and seen.probes < most:
        seen = Readiness.from_dict(check(url, seen).as_dict())  # what a rescheduled poke reads back
    return seen


def test_readiness_waits_through_not_ready_answers() -> None:
    with readiness_server(not_ready_first=3) as (url, answers):
        seen = probes_until_ready(url, most=10)
    assert answers == [503, 503, 503, 200, 200]
    assert seen.ready and seen.summary()["attempts"] == 5 and seen.summary()["ready_seconds"] >= 0


def test_one_lucky_ready_answer_does_not_count() -> None:
    """A 200 between two 503s (a pod about to fail its own probe) starts the count again."""
    with readiness_server(not_ready_first=1, then_not_ready=[2]) as (url, answers):
        seen = probes_until_ready(url, most=10)
    assert answers == [503, 200, 503, 200, 200] and seen.probes == 5


def test_readiness_never_ready_and_nothing_listening() -> None:
    with readiness_server(not_ready_first=-1) as (url, answers):
        seen = probes_until_ready(url, most=4)
    assert not seen.ready and set(answers) == {503} and seen.last == "HTTP 503"
    refused = check(url, Readiness())  # the server is gone: its port refuses connections
    assert not refused.ready and ("Connection refused" in refused.last or "URLError" in refused.last)


def test_finish_records_revision_and_outcome_in_mlflow(settings: Settings) -> None:
    request = RolloutRequest.from_params(PARAMS)
    state = rollout_run.begin(settings, "serving_rollout", "r1", request)
    assert state[LINK_XCOM_KEY].endswith(f"/#/runs/{state['mlflow_run_id']}")
    result = rollout_run.finish(settings, state, HISTORY, {"ready_seconds": 1.5, "attempts": 4})
    assert result["revision"] == 7 and result["outcome"] == "succeeded"
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["image"] == request.image
    assert run.data.params["chart_version"] == "0.1.0"
    assert run.data.metrics["release_revision"] == 7 and run.data.metrics["ready_attempts"] == 4
    assert run.data.tags["outcome"] == "succeeded"
    assert (run.data.tags["airflow.run_id"], run.data.tags["airflow.dag_id"]) == ("r1", "serving_rollout")


def test_a_release_that_never_got_ready_is_closed_not_ready_with_its_revision(settings: Settings) -> None:
    state = rollout_run.begin(settings, "serving_rollout", "r2", RolloutRequest.from_params(PARAMS))
    rollout_run.record_outcome(settings, state, rollout_run.outcome_of_failed_task("verify"), HISTORY)
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", "not_ready")
    assert run.data.metrics["release_revision"] == 7 and run.data.metrics["succeeded"] == 0


def test_a_run_is_closed_even_without_a_revision(settings: Settings) -> None:
    state = rollout_run.begin(settings, "serving_rollout", "r4", RolloutRequest.from_params(PARAMS))
    rollout_run.record_outcome(settings, state, rollout_run.outcome_of_failed_task("finish"), history={"no": 1})
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", "failed")
    assert "release_revision" not in run.data.metrics


def test_a_retried_prepare_reuses_the_mlflow_run(settings: Settings) -> None:
    request = RolloutRequest.from_params(PARAMS)
    first = rollout_run.begin(settings, "serving_rollout", "r3", request)
    again = rollout_run.begin(settings, "serving_rollout", "r3", request)
    assert first["mlflow_run_id"] == again["mlflow_run_id"]
