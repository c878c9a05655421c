"""The ingest DAG's tasks as plain functions: each runs one pipeline step on the run folder and logs
the step's numbers to the run's MLflow run. No Airflow import, so they are tested without a scheduler;
the DAG file only wires them to tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from patientinsight import pipeline, tracking
from patientinsight.ingest import run_params, step_metrics
from patientinsight.lexical import bm25_params
from patientinsight.settings import Settings

log = logging.getLogger(__name__)

RUN_TAG = "airflow.run_id"
State = dict[str, Any]


def begin_run(settings: Settings, dag_id: str, run_id: str, params: dict[str, Any]) -> State:
    """The run folder and the MLflow run of one DAG run; a retry finds and reuses both."""
    run_dir = settings.runs_dir / pipeline.run_key(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    uri = settings.tracking_uri
    mlflow_run = tracking.find_run(uri, settings.mlflow_experiment, RUN_TAG, run_id)
    if mlflow_run is None:
        mlflow_run = tracking.start_run(
            uri, settings.mlflow_experiment, run_id, {RUN_TAG: run_id, "airflow.dag_id": dag_id}
        )
    logged = run_params(params["source_uri"], settings, bool(params["full_refresh"]), params["limit"])
    logged["max_quarantine_ratio"] = float(params["max_quarantine_ratio"])
    shard_size = int(params.get("shard_size") or settings.embed_shard_size)
    logged["embed_shard_size"] = shard_size
    tracking.log_params(uri, mlflow_run, logged)
    return {
        "run_dir": str(run_dir),
        "mlflow_run_id": mlflow_run,
        "mlflow_run_url": f"{settings.mlflow_ui_url.rstrip('/')}/#/runs/{mlflow_run}",
        "source_uri": params["source_uri"],
        "full_refresh": bool(params["full_refresh"]),
        "limit": params["limit"],
        "max_quarantine_ratio": float(params["max_quarantine_ratio"]),
        "max_mrr_drop": float(params.get("max_mrr_drop", settings.gate_max_mrr_drop)),
        "shard_size": shard_size,
    }


def _tracked(settings: Settings, state: State, name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a step and log its numbers; a failed validation still logs the counts it has."""
    try:
        result = step()
    except pipeline.QuarantineExceeded as exc:
        tracking.log_metrics(settings.tracking_uri, state["mlflow_run_id"], step_metrics(name, exc.report))
        raise
    tracking.log_metrics(settings.tracking_uri, state["mlflow_run_id"], step_metrics(name, result))
    return result


def validate(settings: Settings, state: State, storage_options: dict[str, Any]) -> dict[str, Any]:
    return _tracked(settings, state, "validate", lambda: pipeline.validate_source(
        state["source_uri"], Path(state["run_dir"]), settings.read_chunk_rows,
        state["max_quarantine_ratio"], state["limit"], storage_options,
    ))  # fmt: skip


def profile(settings: Settings, state: State) -> dict[str, Any]:
    return _tracked(settings, state, "profile", lambda: pipeline.profile_run(
        Path(state["run_dir"]), settings.profile_max_rows))  # fmt: skip


def plan(settings: Settings, state: State) -> dict[str, Any]:
    embedding = pipeline.make_embedder(settings).describe()
    return _tracked(settings, state, "plan", lambda: pipeline.plan_changes(
        Path(state["run_dir"]), pipeline.make_index(settings), embedding, state["full_refresh"]))  # fmt: skip


def shards(settings: Settings, state: State) -> list[dict[str, Any]]:
    """The embedding shards of the plan: one mapped embed task each (none when nothing changed)."""
    planned = pipeline.plan_shards(Path(state["run_dir"]), state["shard_size"])
    tracking.log_metrics(settings.tracking_uri, state["mlflow_run_id"], {"embed_shards": float(len(planned))})
    return planned


def embed_shard(settings: Settings, state: State, shard: dict[str, Any]) -> dict[str, Any]:
    """One shard; a failure retries this shard alone. Its numbers reach MLflow summed, with build."""
    return pipeline.embed_shard(Path(state["run_dir"]), pipeline.make_embedder(settings), shard)


def build(settings: Settings, state: State) -> dict[str, Any]:
    tracking.log_metrics(
        settings.tracking_uri,
        state["mlflow_run_id"],
        step_metrics("embed", pipeline.embed_summary(Path(state["run_dir"]))),
    )
    embedding = pipeline.make_embedder(settings).describe()
    return _tracked(settings, state, "build", lambda: pipeline.build_version(
        Path(state["run_dir"]), pipeline.make_index(settings), embedding, bm25_params(settings)))  # fmt: skip


def evaluate(settings: Settings, state: State, version: str) -> dict[str, Any]:
    return _tracked(settings, state, "evaluate", lambda: pipeline.evaluate_version(
        pipeline.make_index(settings), version, pipeline.make_embedder(settings), settings))  # fmt: skip


def decide(settings: Settings, state: State, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The gate: whether this version may be published without a person's approval."""
    decision = pipeline.gate(evaluation, state["max_mrr_drop"], settings.gate_min_queries)
    tracking.log_metrics(
        settings.tracking_uri, state["mlflow_run_id"], {"gate_needs_approval": float(decision["needs_approval"])}
    )
    log.info("gate: %s", decision["reason"])
    return decision


def publish(settings: Settings, state: State, version: str) -> dict[str, Any]:
    return _tracked(settings, state, "publish", lambda: pipeline.publish_version(
        pipeline.make_index(settings), version))  # fmt: skip


def finish_run(settings: Settings, state: State, steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write the run's report, attach the reports to MLflow and close the run."""
    run_dir = Path(state["run_dir"])
    # Skipped tasks (publish after a rejection) hand over None; the shards left their sums in the lake.
    done = {k: v for k, v in steps.items() if v}
    done["embed"] = pipeline.embed_summary(run_dir)
    report = pipeline.run_report(run_dir, done, pipeline.make_index(settings))
    uri = settings.tracking_uri
    counts = ("read", "indexed", "quarantined", "embedded", "unchanged", "deleted")
    tracking.log_metrics(
        uri, state["mlflow_run_id"], {**{k: float(report[k]) for k in counts}, "published": float(report["published"])}
    )
    tracking.log_artifacts(uri, state["mlflow_run_id"], pipeline.report_files(run_dir), folder="reports")
    tracking.end_run(uri, state["mlflow_run_id"])
    return report


def fail_run(settings: Settings, state: State | None) -> None:
    """Mark the MLflow run failed and keep the reports written so far (quarantine included)."""
    if not state:
        return
    uri = settings.tracking_uri
    tracking.log_artifacts(uri, state["mlflow_run_id"], pipeline.report_files(Path(state["run_dir"])), folder="reports")
    tracking.end_run(uri, state["mlflow_run_id"], "FAILED")
