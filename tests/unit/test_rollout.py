"""patientinsight.rollout.helm without Airflow: the request checks, the helm command (parsed and rendered by the
real helm), and the readiness verification against a real local HTTP server, with a real MLflow store."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from patientinsight.rollout import helm as rollout
from patientinsight.settings import Settings
from tests.helpers import mlflow_run
from tests.kube_tools import CHART, by_kind, helm, helm_binary, render

PARAMS = {
    "image_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/patientinsight-serving",
    "image_tag": "3f2c1ab",
    "release": "patientinsight-serving",
    "namespace": "patientinsight",
    "values_file": "values-production.yaml",
    "extra_values": {"replicaCount": 4, "autoscaling": {"enabled": False}},
}
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


@contextmanager
def readiness_server(not_ready_first: int) -> Iterator[tuple[str, list[int]]]:
    """A real HTTP server whose /readyz answers 503 `not_ready_first` times, then 200 (-1: never ready)."""
    answers: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = self.path == "/readyz" and 0 <= not_ready_first <= len(answers)
            status = 200 if ready else 503
            answers.append(status)
            body = json.dumps({"ready": ready}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Settings:
    return Settings(
        home=tmp_path_factory.mktemp("rollout-home"),  # one MLflow store for the module: creating one takes seconds
        rollout_chart_path=repo_root / CHART,
        rollout_verify_timeout_s=5.0,
        rollout_verify_interval_s=0.05,
    )


def test_request_from_the_form() -> None:
    request = rollout.RolloutRequest.from_params(PARAMS)
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
    with pytest.raises(rollout.RolloutError, match=message):
        rollout.RolloutRequest.from_params({**PARAMS, **change})


def test_upgrade_command_is_atomic_and_waits(repo_root: Path) -> None:
    request = rollout.RolloutRequest.from_params(PARAMS)
    command = rollout.upgrade_command(request, repo_root / CHART, 600)
    assert command[:5] == ["helm", "upgrade", "--install", "patientinsight-serving", str(repo_root / CHART)]
    assert {"--atomic", "--wait"} <= set(command)
    assert command[command.index("--timeout") + 1] == "600s"
    assert command[command.index("--namespace") + 1] == "patientinsight"
    assert command[-4:] == ["--set-string", f"image.repository={PARAMS['image_repository']}",
                            "--set-string", "image.tag=3f2c1ab"]  # fmt: skip


def test_the_values_render_with_the_real_helm(repo_root: Path) -> None:
    """The very values arguments of the upgrade, given to `helm template`: image, overlay and extra values land."""
    request = rollout.RolloutRequest.from_params(PARAMS)
    docs = by_kind(render(repo_root, *rollout.value_args(request, repo_root / CHART)))
    deployment = docs["Deployment"][0]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == request.image
    assert deployment["spec"]["replicas"] == 4  # extra_values: autoscaling off, 4 replicas
    assert "HorizontalPodAutoscaler" not in docs
    assert "ServiceMonitor" in docs  # values-production.yaml


def test_the_pod_script_quotes_every_argument(repo_root: Path) -> None:
    hostile = {"podAnnotations": {"note": "it's; echo pwned > /tmp/x $(id)"}}
    request = rollout.RolloutRequest.from_params({**PARAMS, "extra_values": hostile})
    script = rollout.pod_script(request, repo_root / CHART, 600)
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    upgrade = rollout.upgrade_command(request, repo_root / CHART, 600)
    start = tokens.index("upgrade") - 1
    assert tokens[start : start + len(upgrade)] == upgrade
    assert tokens[start + len(upgrade)] == ";"
    assert tokens[-2:] == [">", rollout.XCOM_RETURN]


def test_the_pod_script_runs_and_helm_accepts_every_flag(repo_root: Path, tmp_path: Path) -> None:
    """The script as the pod runs it, with the real /bin/sh and helm, against a cluster that is not there:
    helm must get past flag parsing to the cluster, and the script must stop there with helm's status."""
    request = rollout.RolloutRequest.from_params(PARAMS)
    script = rollout.pod_script(request, repo_root / CHART, 600)
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
    assert rollout.release_record(HISTORY)["revision"] == 7
    with pytest.raises(rollout.RolloutError, match="no release revision"):
        rollout.release_record(None)


def test_wait_ready_waits_through_not_ready_answers() -> None:
    with readiness_server(not_ready_first=3) as (url, answers):
        result = rollout.wait_ready(url, timeout_s=5, interval_s=0.05)
    assert answers == [503, 503, 503, 200, 200]
    assert result["attempts"] == 5


def test_wait_ready_fails_when_never_ready() -> None:
    with (
        readiness_server(not_ready_first=-1) as (url, answers),
        pytest.raises(rollout.RolloutNotReady, match=r"did not answer ready within 0\.5s .*last: HTTP 503"),
    ):
        rollout.wait_ready(url, timeout_s=0.5, interval_s=0.05)
    assert len(answers) >= 3 and set(answers) == {503}


def test_wait_ready_fails_when_nothing_listens() -> None:
    with readiness_server(not_ready_first=0) as (url, _):
        pass  # the server is gone: its port refuses connections
    with pytest.raises(rollout.RolloutNotReady, match=r"Connection refused|URLError"):
        rollout.wait_ready(url, timeout_s=0.3, interval_s=0.05)


def test_verify_records_revision_and_outcome_in_mlflow(settings: Settings) -> None:
    request = rollout.RolloutRequest.from_params(PARAMS)
    with readiness_server(not_ready_first=2) as (url, _):
        state = rollout.begin(
            settings.model_copy(update={"rollout_service_url": url}), "serving_rollout", "r1", request
        )
        result = rollout.verify(settings, state, HISTORY)
    assert result["revision"] == 7 and result["outcome"] == "succeeded"
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["image"] == request.image
    assert run.data.params["chart_version"] == "0.1.0"
    assert run.data.metrics["release_revision"] == 7
    assert run.data.tags["outcome"] == "succeeded"


def test_verify_failure_leaves_the_run_to_the_failure_callback(settings: Settings) -> None:
    request = rollout.RolloutRequest.from_params(PARAMS)
    fast = settings.model_copy(update={"rollout_verify_timeout_s": 0.3})
    with readiness_server(not_ready_first=-1) as (url, _):
        state = rollout.begin(fast.model_copy(update={"rollout_service_url": url}), "serving_rollout", "r2", request)
        with pytest.raises(rollout.RolloutNotReady):
            rollout.verify(fast, state, HISTORY)
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert run.info.status == "RUNNING" and run.data.metrics["release_revision"] == 7
    rollout.record_outcome(settings, state, rollout.outcome_of_failed_task("verify"))
    run = mlflow_run(settings.tracking_uri, state["mlflow_run_id"])
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", "not_ready")


def test_a_retried_prepare_reuses_the_mlflow_run(settings: Settings) -> None:
    request = rollout.RolloutRequest.from_params(PARAMS)
    first = rollout.begin(settings, "serving_rollout", "r3", request)
    again = rollout.begin(settings, "serving_rollout", "r3", request)
    assert first["mlflow_run_id"] == again["mlflow_run_id"]
