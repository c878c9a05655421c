"""The whole ingest in one process (the command line's path), with one MLflow run around it."""

from __future__ import annotations

import logging
from typing import Any

from patientinsight import pipeline, tracking
from patientinsight.lexical import bm25_params
from patientinsight.settings import Settings

log = logging.getLogger(__name__)


def run_params(source: str, settings: Settings, full_refresh: bool, limit: int | None) -> dict[str, Any]:
    """What an MLflow run records as params: the source, the model and the settings that shape output."""
    return {
        "source_uri": source,
        "full_refresh": full_refresh,
        "limit": limit,
        "embedding_model": settings.embedding_model,
        "embed_strategy": settings.embed_strategy,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "embed_batch_size": settings.embed_batch_size,
        "embed_shard_size": settings.embed_shard_size,
        "max_quarantine_ratio": settings.max_quarantine_ratio,
    }


def step_metrics(name: str, result: dict[str, Any]) -> dict[str, float]:
    """Numbers only (counts, seconds, rates, metrics), prefixed by the step: never text."""
    return {
        (k if k.startswith("eval_") else f"{name}_{k}").replace("@", "_at_"): float(v)
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def run_ingest(
    source: str,
    settings: Settings,
    full_refresh: bool = False,
    limit: int | None = None,
    run_id: str = "manual",
    storage_options: dict[str, Any] | None = None,
    allow_worse: bool = False,
) -> dict[str, Any]:
    """Every step in order, in this process. Without a person to ask, a version that the gate holds
    back is not published unless `allow_worse`."""
    run_dir = settings.runs_dir / pipeline.run_key(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    uri = settings.tracking_uri
    mlflow_run = tracking.start_run(uri, settings.mlflow_experiment, run_id, {"patientinsight.run_id": run_id})
    tracking.log_params(uri, mlflow_run, run_params(source, settings, full_refresh, limit))
    index = pipeline.make_index(settings)
    embedder = pipeline.make_embedder(settings)
    steps: dict[str, dict[str, Any]] = {}
    try:
        steps["validate"] = pipeline.validate_source(
            source, run_dir, settings.read_chunk_rows, settings.max_quarantine_ratio, limit, storage_options
        )
        embedding = embedder.describe()
        steps["plan"] = pipeline.plan_changes(run_dir, index, embedding, full_refresh)
        steps["embed"] = pipeline.embed_planned(run_dir, embedder, settings.embed_shard_size)
        # Profiling after embedding: in one process, the encoder measured ~8% slower after
        # ydata-profiling had run (docs/PERFORMANCE.md). The DAG runs it as a task of its own.
        steps["profile"] = pipeline.profile_run(run_dir, settings.profile_max_rows)
        steps["build"] = pipeline.build_version(run_dir, index, embedding, bm25_params(settings))
        version = steps["build"]["version"]
        steps["evaluate"] = pipeline.evaluate_version(index, version, embedder, settings)
        steps["gate"] = pipeline.gate(steps["evaluate"], settings.gate_max_mrr_drop, settings.gate_min_queries)
        if steps["gate"]["needs_approval"] and not allow_worse:
            log.warning("not published: %s; re-run with --allow-worse to publish anyway", steps["gate"]["reason"])
        else:
            steps["publish"] = pipeline.publish_version(index, version)
        report = pipeline.run_report(run_dir, steps, index)
    except Exception:
        tracking.end_run(uri, mlflow_run, "FAILED")
        raise
    finally:
        for name, result in steps.items():
            tracking.log_metrics(uri, mlflow_run, step_metrics(name, result))
        tracking.log_artifacts(uri, mlflow_run, pipeline.report_files(run_dir), folder="reports")
    tracking.end_run(uri, mlflow_run)
    return {**report, "mlflow_run_id": mlflow_run}
