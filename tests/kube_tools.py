"""Shared by the chart and rollout tests: the real helm binary, strict manifest validation, and a stand-in
for the Kubernetes API server (named so: it answers the two calls a deferring KubernetesPodOperator makes)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.http_server import JsonHandler, LocalServer

KUBERNETES_VERSION = "1.33.0"
CHART = Path("helm") / "patientinsight-serving"
# A serving_rollout form as CI would send it (the DAG's trigger form, filled in).
ROLLOUT_FORM = {
    "image_repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/patientinsight-serving",
    "image_tag": "3f2c1ab",
    "release": "patientinsight-serving",
    "namespace": "patientinsight",
    "values_file": "values-production.yaml",
    "extra_values": {},
}


def helm_binary(repo_root: Path) -> Path:
    """.tools/bin/helm, put there by scripts/install_helm.sh (the Makefile runs it before the tests)."""
    path = repo_root / ".tools" / "bin" / "helm"
    if not os.access(path, os.X_OK):
        pytest.fail(f"helm not found at {path}: run scripts/install_helm.sh (make test runs it)", pytrace=False)
    return path


def helm(repo_root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/helm-cache", "HELM_CONFIG_HOME": "/tmp/helm-config"}
    result = subprocess.run(
        [str(helm_binary(repo_root)), *args], capture_output=True, text=True, env=env, cwd=repo_root, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(repo_root: Path, *args: str, release: str = "patientinsight-serving") -> list[dict[str, Any]]:
    out = helm(repo_root, "template", release, str(repo_root / CHART), "--namespace", "patientinsight", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def validate(doc: Any) -> None:
    """Strict validation (unknown fields fail) against the Kubernetes 1.33 OpenAPI schemas."""
    import kubernetes_validate

    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        found.setdefault(doc["kind"], []).append(doc)
    return found


@dataclass
class KubeApiStandIn:
    """A stand-in for the Kubernetes API server: lists no pods and accepts pod creation, recording each
    request, so that the real kubernetes client, hook and operator run up to the HTTP boundary."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)

    def kubeconfig(self, folder: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": "standin-token"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
            "current-context": "standin",
        }
        path = folder / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path


class _KubeApiHandler(JsonHandler):
    standin: KubeApiStandIn

    def do_GET(self) -> None:  # noqa: N802 (http.server calls it so)
        url = urlparse(self.path)
        self.standin.requests.append({"method": "GET", "path": url.path, "query": parse_qs(url.query)})
        if url.path.startswith("/api/v1/namespaces/") and url.path.endswith("/pods"):
            self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        else:
            self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    def do_POST(self) -> None:  # noqa: N802 (http.server calls it so)
        url = urlparse(self.path)
        body = self.read_json()
        self.standin.requests.append({"method": "POST", "path": url.path, "body": body})
        created = {**body, "status": {"phase": "Pending"}}
        created["metadata"] = {**body["metadata"], "uid": "0000-standin", "resourceVersion": "1"}
        self.send_json(201, created)


@contextmanager
def kube_api_standin() -> Iterator[KubeApiStandIn]:
    standin = KubeApiStandIn()
    with LocalServer(_KubeApiHandler, standin=standin) as server:
        standin.url = server.url
        yield standin
