"""
### patient_ingest

Reads a file of PMC-Patients case reports (local path, `file://` or `s3://`; CSV, JSON or JSON Lines,
optionally gzipped), validates every row (failures go to `quarantine.jsonl` with row, field and
reason), profiles the data, embeds only new or changed records, stages a new index version,
evaluates it and publishes it atomically as the Asset `patient_index`. One MLflow run per DAG run.

The records to embed are cut into shards of `shard_size`; `embed` is mapped over them (one task
each, in the `embedding` pool), writes vectors to the lake, and `build` stages the version only when
every shard succeeded: a failed shard is retried alone and nothing is published half-done.

Trigger it from the form, or with conf `{"source_uri": "s3://bucket/key"}` (the S3 trigger does).
The run's reports are in `PATIENTINSIGHT_HOME/lake/runs/<run id>/`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from patientinsight.airflow.connections import pinecone_credentials, storage_options_for
from patientinsight.airflow.defaults import dag_arguments, share_mlflow_link
from patientinsight.ingest import run
from patientinsight.ingest.approval import approval_body
from patientinsight.ingest.formats import described as source_formats
from patientinsight.ingest.sources import SourceError, check_source
from patientinsight.ingest.steps import QuarantineExceeded
from patientinsight.settings import get_settings
from patientinsight.tracking import LINK_XCOM_KEY

EMBEDDING_POOL = "embedding"  # defined in airflow_settings.yaml
PATIENT_INDEX = Asset(name="patient_index", uri="patientinsight://index/patient_index")
SETTINGS = get_settings()


# begin's state, pushed before its own checks: a begin that fails after opening the MLflow run returns
# nothing, and its run must still be closed.
BEGUN_XCOM_KEY = "begun"


def _on_failure(context: Any) -> None:
    """Close the run's MLflow run as FAILED, keeping the reports written so far."""
    ti = context["ti"]
    run.fail(get_settings(), ti.xcom_pull(task_ids="begin") or ti.xcom_pull(task_ids="begin", key=BEGUN_XCOM_KEY))


# One run at a time: each version is built on the published one. Active once deployed: the S3 trigger's
# runs (REST API) would otherwise wait as queued until someone unpauses the DAG.
@dag(
    is_paused_upon_creation=False,
    **dag_arguments(
        "patient_ingest",
        description="Read, validate, embed and index PMC-Patients case reports; evaluate the new version, publish it",
        owner="data-engineering",
        tags=["ingest"],
        doc_md=__doc__,
        on_failure=_on_failure,
        retry_delay=timedelta(seconds=30),
        exponential_backoff=True,
    ),
    params={
        "source_uri": Param(
            str(SETTINGS.sample_source),
            type="string",
            minLength=1,
            title="Source URI",
            description=f"Local path, file:// or s3:// URI of a PMC-Patients export ({source_formats()}). "
            "A source that is not there fails the run at once, at its first task (begin), saying so.",
        ),
        "full_refresh": Param(
            False,
            type="boolean",
            title="Full refresh",
            description="Delete indexed records that are missing from the source.",
        ),
        "max_quarantine_ratio": Param(
            SETTINGS.max_quarantine_ratio,
            type="number",
            minimum=0,
            maximum=1,
            title="Max quarantined share",
            description="Fail the run when more than this share of rows fails validation.",
        ),
        "limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Row limit",
            description="Read at most this many rows (empty: all).",
        ),
        "shard_size": Param(
            SETTINGS.embed_shard_size,
            type="integer",
            minimum=1,
            title="Shard size",
            description="Records per embedding task; each shard is one mapped task (one worker's work).",
        ),
        "encoding": Param(
            SETTINGS.source_encoding,
            type="string",
            minLength=1,
            title="Source encoding",
            description="Text encoding of the source file, e.g. utf-8, latin-1, cp1252.",
        ),
        "max_mrr_drop": Param(
            SETTINGS.gate_max_mrr_drop,
            type="number",
            minimum=0,
            maximum=1,
            title="Max MRR drop",
            description="Publish without asking unless MRR falls more than this (and beyond the per-query spread) "
            "below the published version's on the same queries and candidates, or below BM25's.",
        ),
    },
)
def patient_ingest() -> None:
    # Task names are the step names of patientinsight.ingest.run.ORDER.
    @task
    def begin() -> run.State:
        context = get_current_context()
        settings = get_settings()
        state = run.begin(settings, context["run_id"], dict(context["params"]))
        share_mlflow_link(context, state)
        context["ti"].xcom_push(key=BEGUN_XCOM_KEY, value=state)
        try:  # a source that is not there fails the run here, at once and without retries, saying so
            check_source(state["source_uri"], storage_options_for(state["source_uri"], settings.aws_conn_id))
        except SourceError as exc:
            raise AirflowFailException(str(exc)) from exc
        return state

    @task
    def validate(state: run.State) -> dict[str, Any]:
        settings = get_settings()
        options = storage_options_for(state["source_uri"], settings.aws_conn_id)
        try:
            return run.validate(settings, state, options)
        except (SourceError, QuarantineExceeded) as exc:
            raise AirflowFailException(str(exc)) from exc  # the same input fails the same way: no retry

    @task
    def profile(state: run.State) -> dict[str, Any]:
        return run.profile(get_settings(), state)

    @task
    def plan(state: run.State) -> dict[str, Any]:
        return run.plan(get_settings(), state, pinecone_credentials)

    @task
    def shards(state: run.State, planned: dict[str, Any]) -> list[dict[str, Any]]:
        return run.shards(get_settings(), state)

    # One task per shard: spread over the workers by the Celery or Kubernetes executor, bounded by the
    # `embedding` pool (airflow_settings.yaml) under the LocalExecutor. Vectors go to the lake.
    @task(pool=EMBEDDING_POOL, map_index_template="shard {{ shard_number }}")
    def embed(state: run.State, shard: dict[str, Any]) -> dict[str, Any]:
        get_current_context()["shard_number"] = shard["shard"]  # type: ignore[typeddict-unknown-key]
        return run.embed(get_settings(), state, shard)

    # Runs when every shard succeeded, or when there was none to run (nothing changed).
    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def build(state: run.State) -> dict[str, Any]:
        return run.build(get_settings(), state, pinecone_credentials)

    @task
    def evaluate(state: run.State, built: dict[str, Any]) -> dict[str, Any]:
        return run.evaluate(get_settings(), state, built["version"], pinecone_credentials)

    @task.branch
    def gate(state: run.State, evaluated: dict[str, Any]) -> str:
        decision = run.gate(get_settings(), state, evaluated)
        ti = get_current_context()["ti"]
        ti.xcom_push(key="decision", value=decision)  # for the report
        if decision["needs_approval"]:  # what the approver reads: numbers side by side, the MLflow link
            ti.xcom_push(key="approval", value=approval_body(evaluated, decision, state.get(LINK_XCOM_KEY)))
        return "approve_publish" if decision["needs_approval"] else "publish"

    # A worse index waits for a data engineer (Required Actions in the UI); no answer in two days
    # counts as a rejection, and the published version stays.
    approve = ApprovalOperator(
        task_id="approve_publish",
        subject="patient_ingest: the new index version retrieves worse. Publish it anyway?",
        body="{{ ti.xcom_pull(task_ids='gate', key='approval') }}",
        defaults="Reject",
        response_timeout=timedelta(days=2),
    )

    @task(outlets=[PATIENT_INDEX], trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def publish(state: run.State, built: dict[str, Any]) -> dict[str, Any]:
        result = run.publish(get_settings(), state, built["version"], pinecone_credentials)
        get_current_context()["outlet_events"][PATIENT_INDEX].extra = {
            "version": built["version"],
            "records": built["records"],
        }
        return result

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def finish(state: run.State, steps: dict[str, Any]) -> dict[str, Any]:
        steps["gate"] = get_current_context()["ti"].xcom_pull(task_ids="gate", key="decision")
        return run.finish(get_settings(), state, steps, pinecone_credentials)

    state = begin()
    validated = validate(state)
    planned = plan(state)
    profiled = profile(state)
    validated >> [planned, profiled]
    embedded = embed.partial(state=state).expand(shard=shards(state, planned))
    built = build(state)
    embedded >> built
    evaluated = evaluate(state, built)
    published = publish(state, built)
    gate(state, evaluated) >> [published, approve]
    approve >> published
    steps = {"validate": validated, "profile": profiled, "plan": planned}
    finish(state, {**steps, "build": built, "evaluate": evaluated, "publish": published})


patient_ingest()
