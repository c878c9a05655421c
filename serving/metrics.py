"""Prometheus metrics of one app, in its own registry (several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "patientinsight_http_request_duration_seconds",
            "HTTP request latency by route template, method and status class (2xx, 4xx, ...; unknown values: other).",
            ["route", "method", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.retrieval = Histogram(
            "patientinsight_retrieval_seconds",
            "Retrieval time (query encoding where the retriever uses it, search, passages).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.generation = Histogram(
            "patientinsight_generation_seconds",
            "Generator time by generator and outcome (ok, error).",
            ["generator", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "patientinsight_generator_tokens",
            "Tokens reported by the generator, by kind (prompt, completion).",
            ["generator", "kind"],
            registry=self.registry,
        )
        self.index_records = Gauge(
            "patientinsight_index_records", "Records in the loaded index version.", registry=self.registry
        )
        self.index_info = Info("patientinsight_index", "The loaded index version.", registry=self.registry)
        self.index_switches = Counter(
            "patientinsight_index_switches", "Index versions loaded since start.", registry=self.registry
        )
        self.rate_limit_fallbacks = Counter(
            "patientinsight_rate_limit_fallbacks",
            "Requests whose rate limit this process counted alone because the shared store (Redis) failed.",
            registry=self.registry,
        )
        self.index_errors = Counter(
            "patientinsight_index_load_errors", "Index versions that failed to load.", registry=self.registry
        )
        self.audit_written = Counter(
            "patientinsight_audit_records_written",
            "Query audit rows written to the audit database.",
            registry=self.registry,
        )
        self.audit_write_failures = Counter(
            "patientinsight_audit_write_failures",
            "Failed attempts to write audit rows (the database away or failing); the rows wait in the backlog.",
            registry=self.registry,
        )
        self.audit_dropped = Counter(
            "patientinsight_audit_records_dropped",
            "Query audit rows lost: the backlog was full, or the service stopped while the database was away.",
            registry=self.registry,
        )
        self.audit_backlog = Gauge(
            "patientinsight_audit_backlog", "Query audit rows waiting to be written.", registry=self.registry
        )
