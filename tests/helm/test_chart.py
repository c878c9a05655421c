"""The serving chart with the real helm binary (.tools/bin/helm): lint, render with the default and the
production values, validate every manifest strictly against Kubernetes 1.33, and refuse wrong values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube_tools import CHART, by_kind, helm, render, validate

PRODUCTION = str(CHART / "values-production.yaml")
# A CRD: the Kubernetes schemas do not know it; it is checked field by field below instead.
NOT_IN_KUBERNETES = {"ServiceMonitor"}


@pytest.fixture(scope="module")
def default_docs(repo_root: Path) -> list[dict[str, Any]]:
    return render(repo_root)


@pytest.fixture(scope="module")
def production_docs(repo_root: Path) -> list[dict[str, Any]]:
    return render(repo_root, "--values", str(repo_root / PRODUCTION))


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs)[kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.mark.parametrize("values", [[], ["--values", PRODUCTION]], ids=["default", "production"])
def test_helm_lint_strict(repo_root: Path, values: list[str]) -> None:
    result = helm(repo_root, "lint", "--strict", str(repo_root / CHART), *values)
    assert "0 chart(s) failed" in result.stdout


def test_the_validator_rejects_an_unknown_field(default_docs: list[dict[str, Any]]) -> None:
    """The validation below would be worthless if strict mode let a misspelt field through."""
    deployment = json.loads(json.dumps(_one(default_docs, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(Exception, match="readinessProbes"):
        validate(deployment)


@pytest.mark.parametrize("docs_fixture", ["default_docs", "production_docs"])
def test_every_manifest_is_valid_for_kubernetes_1_33(docs_fixture: str, request: pytest.FixtureRequest) -> None:
    docs: list[dict[str, Any]] = request.getfixturevalue(docs_fixture)
    kinds = {doc["kind"] for doc in docs}
    expected = {"Deployment", "Service", "ConfigMap", "ServiceAccount", "HorizontalPodAutoscaler"}
    assert expected | {"PodDisruptionBudget", "NetworkPolicy"} <= kinds
    for doc in docs:
        if doc["kind"] not in NOT_IN_KUBERNETES:
            validate(doc)


def test_deployment_probes_resources_and_security(default_docs: list[dict[str, Any]]) -> None:
    pod = _one(default_docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    assert mounts["index"]["mountPath"] == "/var/lib/patientinsight"


def test_settings_come_from_the_configmap_and_existing_secrets(production_docs: list[dict[str, Any]]) -> None:
    configmap = next(
        d for d in production_docs if d["kind"] == "ConfigMap" and "dashboard" not in d["metadata"]["name"]
    )
    assert configmap["data"]["HF_HUB_OFFLINE"] == "1"
    assert configmap["data"]["PATIENTINSIGHT_HOME"] == "/var/lib/patientinsight"
    container = _one(production_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    sources = container["envFrom"]
    assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in sources
    assert {"secretRef": {"name": "patientinsight-serving-env"}} in sources
    assert not any(d["kind"] == "Secret" for d in production_docs)  # the chart never carries secrets


def test_production_reads_the_index_from_the_shared_claim(production_docs: list[dict[str, Any]]) -> None:
    pod = _one(production_docs, "Deployment")["spec"]["template"]["spec"]
    index = next(v for v in pod["volumes"] if v["name"] == "index")
    assert index["persistentVolumeClaim"] == {"claimName": "patientinsight-index", "readOnly": True}
    pdb = _one(production_docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb
    hpa = _one(production_docs, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)


def test_rolling_update_keeps_old_pods_until_new_ones_are_ready(default_docs: list[dict[str, Any]]) -> None:
    strategy = _one(default_docs, "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_service_monitor_scrapes_the_service_port(production_docs: list[dict[str, Any]]) -> None:
    monitor = _one(production_docs, "ServiceMonitor")
    service = _one(production_docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {p["name"] for p in service["spec"]["ports"]} == {monitor["spec"]["endpoints"][0]["port"]}
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}


def test_service_monitor_is_optional(default_docs: list[dict[str, Any]]) -> None:
    assert "ServiceMonitor" not in by_kind(default_docs)


def _dashboard(docs: list[dict[str, Any]]) -> dict[str, Any]:
    configmap = next(d for d in docs if d["metadata"]["name"].endswith("-dashboard"))
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    return dict(json.loads(configmap["data"]["patientinsight-serving.json"]))


def test_dashboard_covers_rate_latency_errors_and_generator(default_docs: list[dict[str, Any]]) -> None:
    exprs = " ".join(t["expr"] for p in _dashboard(default_docs)["panels"] for t in p["targets"])
    assert "sum by (route) (rate(patientinsight_http_request_duration_seconds_count" in exprs
    assert 'status=~"5.."' in exprs
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le) (rate(patientinsight_http_request_duration_seconds_bucket"
            in exprs
        )
    assert "patientinsight_generation_seconds_bucket" in exprs


def test_dashboard_metrics_are_the_ones_the_service_exports(default_docs: list[dict[str, Any]]) -> None:
    """Every metric the dashboard queries is registered by serving/metrics.py, with the labels it groups by."""
    from prometheus_client.metrics import MetricWrapperBase

    from serving.metrics import Metrics

    metrics = [m for m in vars(Metrics()).values() if isinstance(m, MetricWrapperBase)]
    labels_of = {m._name: set(m._labelnames) for m in metrics}  # prometheus_client keeps them only there
    targets = [t["expr"] for p in _dashboard(default_docs)["panels"] for t in p["targets"]]
    scraped = {"le", "namespace", "service"}  # histogram buckets, and the labels Prometheus adds per target
    for expr in targets:
        names = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"patientinsight_\w+", expr)}
        assert names and names <= set(labels_of), (expr, names - set(labels_of))
        used = {label for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(", ")}
        used |= set(re.findall(r"(\w+)=~?\"", expr))
        allowed = scraped.union(*(labels_of[n] for n in names))
        assert used <= allowed, (expr, used - allowed)


def test_network_policy_admits_only_the_service_port(production_docs: list[dict[str, Any]]) -> None:
    policy = _one(production_docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    namespaces = {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"][1:]}
    assert "airflow" in namespaces  # the rollout's verification reaches the Service from there


def _configmap(docs: list[dict[str, Any]]) -> dict[str, str]:
    return dict(next(d for d in docs if d["kind"] == "ConfigMap" and "dashboard" not in d["metadata"]["name"])["data"])


def _egress_ports(docs: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for rule in _one(docs, "NetworkPolicy")["spec"]["egress"] for p in rule["ports"]}


def test_client_bounds_reach_the_server_and_the_rate_limit_is_per_pod_by_default(
    default_docs: list[dict[str, Any]],
) -> None:
    data = _configmap(default_docs)
    assert data["PATIENTINSIGHT_SERVE_TIMEOUT_KEEP_ALIVE_S"] == "5"
    assert data["PATIENTINSIGHT_SERVE_CLIENT_TIMEOUT_S"] == "10"
    assert data["PATIENTINSIGHT_SERVE_LIMIT_CONCURRENCY"] == "200"
    assert "PATIENTINSIGHT_RATE_LIMIT_STORAGE" not in data  # memory://: per pod
    assert _egress_ports(default_docs) == {53, 443}  # no Redis to reach


@pytest.mark.parametrize(
    ("settings", "port"),
    [
        (["rateLimit.storage=redis://patientinsight-redis.cache:6380/1"], 6380),
        (["rateLimit.storage=rediss://patientinsight-redis.cache/0"], 6379),
        (["rateLimit.redisPort=6390"], 6390),  # the URI is in a Secret
    ],
)
def test_a_shared_rate_limit_names_redis_and_opens_its_port(repo_root: Path, settings: list[str], port: int) -> None:
    docs = render(repo_root, *[arg for s in settings for arg in ("--set", s)])
    storage = settings[0].partition("=")[2] if settings[0].startswith("rateLimit.storage") else None
    assert _configmap(docs).get("PATIENTINSIGHT_RATE_LIMIT_STORAGE") == storage
    assert port in _egress_ports(docs)
    validate(_one(docs, "NetworkPolicy"))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=zero", "at '/replicaCount': got string, want integer"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("image.tag=bad tag!", "at '/image/tag'"),
        ("service.port=70000", "at '/service/port'"),
        ("securityContext.readOnlyRootFilesystem=false", "at '/securityContext/readOnlyRootFilesystem'"),
        ("podSecurityContext.runAsNonRoot=false", "at '/podSecurityContext/runAsNonRoot'"),
        ("replicaCoun=3", "additional properties 'replicaCoun' not allowed"),
        ("config.PATIENTINSIGHT_DEV_MODE=true", "at '/config/PATIENTINSIGHT_DEV_MODE'"),
        ("server.clientTimeoutSeconds=0", "at '/server/clientTimeoutSeconds'"),
        ("rateLimit.storage=http://cache:6379", "at '/rateLimit/storage'"),
    ],
)
def test_a_wrong_value_fails_against_the_schema(repo_root: Path, setting: str, message: str) -> None:
    result = helm(repo_root, "template", "r", str(repo_root / CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("config.PATIENTINSIGHT_API_KEYS=k:abc", "config.PATIENTINSIGHT_API_KEYS is a secret"),
        ("autoscaling.minReplicas=9", "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
        ("rateLimit.storage=redis://:pw@cache:6379/0", "rateLimit.storage holds credentials: put"),
        ("config.PATIENTINSIGHT_SERVE_CLIENT_TIMEOUT_S=1", "comes from the server and rateLimit values"),
    ],
)
def test_a_wrong_combination_fails_with_a_clear_message(repo_root: Path, setting: str, message: str) -> None:
    result = helm(repo_root, "template", "r", str(repo_root / CHART), "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_rollout_rbac_is_valid(repo_root: Path) -> None:
    docs = [d for d in yaml.safe_load_all((repo_root / "helm" / "rbac" / "rollout-rbac.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    for doc in docs:
        validate(doc)
    rules = docs[1]["rules"]
    assert any("secrets" in r["resources"] for r in rules)  # helm's release records
