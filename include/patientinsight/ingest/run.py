"""One run of patient_ingest: its MLflow run and its steps, each logging its numbers to that run.

The DAG calls one of these functions per task; the command line calls `run_ingest`, which calls the same
functions in `ORDER` (an order the DAG's dependencies allow), so both make the same MLflow run with the
same tags. No Airflow import: tested without a scheduler, the DAG file only wires the functions to tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from patientinsight.embedding.encoder import Embedder, make_embedder
from patientinsight.index.factory import make_index
from patientinsight.index.lexical import bm25_params
from patientinsight.ingest import shards as shard_steps
from patientinsight.ingest import steps
from patientinsight.ingest.lake import read_json, report_files, run_key
from patientinsight.settings import Settings
from patientinsight.tracking import TrackedRun

if TYPE_CHECKING:
    from patientinsight.index.factory import CredentialsLookup

log = logging.getLogger(__name__)

PIPELINE = "patient_ingest"  # the DAG id, and the MLflow tag of runs the command line makes
# Every step, in the order the command line runs them. The DAG runs `profile` beside `plan` and the
# embedding; here it comes after the embedding: in one process the encoder measured ~8% slower once
# ydata-profiling had run (docs/PERFORMANCE.md). tests/dags checks that the DAG allows this order and
# that its tasks bear these names.
ORDER = ("begin", "validate", "plan", "shards", "embed", "profile", "build", "evaluate", "gate", "publish", "finish")


class State(TypedDict):
    """What `begin` hands every later step: plain JSON values, as it crosses Airflow's XCom."""

    run_dir: str
    mlflow_run_id: str
    mlflow_run_url: str  # tracking.LINK_XCOM_KEY: the XCom that plugins/mlflow_link.py reads
    source_uri: str
    encoding: str
    full_refresh: bool
    limit: int | None
    max_quarantine_ratio: float
    max_mrr_drop: float
    shard_size: int


_embedders: dict[str, Embedder] = {}


def process_embedder(settings: Settings) -> Embedder:
    """The process's one embedder for these settings: the plan, every shard and the evaluation share its
    runtime (each new embedder starts its own). Other settings replace it: one runtime's memory at a time."""
    key = settings.model_dump_json()
    if key not in _embedders:
        _embedders.clear()
        _embedders[key] = make_embedder(settings)
    return _embedders[key]


def run_params(state: State, settings: Settings) -> dict[str, Any]:
    """What the MLflow run records as params: the run's inputs and the settings that shape its output."""
    return {
        "source_uri": state["source_uri"],
        "source_encoding": state["encoding"],
        "full_refresh": state["full_refresh"],
        "limit": state["limit"],
        "max_quarantine_ratio": state["max_quarantine_ratio"],
        "embed_shard_size": state["shard_size"],
        "embedding_model": settings.embedding_model,
        "embed_strategy": settings.embed_strategy,
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
        "embed_batch_size": settings.embed_batch_size,
        "retriever": settings.retriever,
    }


def step_metrics(name: str, result: dict[str, Any]) -> dict[str, float]:
    """Numbers only (counts, seconds, rates, metrics), prefixed by the step: never text."""
    return {
        (k if k.startswith("eval_") else f"{name}_{k}").replace("@", "_at_"): float(v)
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def begin(settings: Settings, run_id: str, params: dict[str, Any]) -> State:
    """The run folder and the MLflow run of one pipeline run; a retry finds and reuses both. `params` are
    the DAG's form (or the command line's arguments); what they leave out comes from the settings."""
    run_dir = settings.runs_dir / run_key(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    tracked = TrackedRun.open(settings.tracking_uri, settings.mlflow_experiment, run_id, PIPELINE)

    def given(name: str, default: Any) -> Any:
        value = params.get(name)
        return default if value is None else value

    state: State = {
        "run_dir": str(run_dir),
        "mlflow_run_id": tracked.run_id,
        "mlflow_run_url": tracked.url(settings.mlflow_ui_url),
        "source_uri": str(params["source_uri"]),
        "encoding": str(given("encoding", settings.source_encoding)),
        "full_refresh": bool(params.get("full_refresh")),
        "limit": params.get("limit"),
        "max_quarantine_ratio": float(given("max_quarantine_ratio", settings.max_quarantine_ratio)),
        "max_mrr_drop": float(given("max_mrr_drop", settings.gate_max_mrr_drop)),
        "shard_size": int(given("shard_size", settings.embed_shard_size)),
    }
    tracked.log_params(run_params(state, settings))
    return state


def _tracked(settings: Settings, state: State) -> TrackedRun:
    return TrackedRun(settings.tracking_uri, state["mlflow_run_id"])


def _step(settings: Settings, state: State, name: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a step and log its numbers; a failed validation still logs the counts it has."""
    try:
        result = step()
    except steps.QuarantineExceeded as exc:
        _tracked(settings, state).log_metrics(step_metrics(name, exc.report))
        raise
    _tracked(settings, state).log_metrics(step_metrics(name, result))
    return result


def validate(settings: Settings, state: State, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    return _step(settings, state, "validate", lambda: steps.validate_source(
        state["source_uri"], Path(state["run_dir"]), settings.read_chunk_rows,
        state["max_quarantine_ratio"], state["limit"], storage_options,
        state.get("encoding", settings.source_encoding),  # a run begun before the setting existed has none
    ))  # fmt: skip


def profile(settings: Settings, state: State) -> dict[str, Any]:
    return _step(settings, state, "profile", lambda: steps.profile_run(
        Path(state["run_dir"]), settings.profile_max_rows))  # fmt: skip


# `credentials`: how the caller (the DAG, the command line) finds Pinecone's (index.factory.make_index).
def plan(settings: Settings, state: State, credentials: CredentialsLookup | None = None) -> dict[str, Any]:
    embedding = process_embedder(settings).describe()
    return _step(settings, state, "plan", lambda: steps.plan_changes(
        Path(state["run_dir"]), make_index(settings, credentials), embedding, state["full_refresh"]))  # fmt: skip


def shards(settings: Settings, state: State) -> list[dict[str, Any]]:
    """The embedding shards of the plan: one mapped embed task each (none when nothing changed)."""
    planned = shard_steps.plan_shards(Path(state["run_dir"]), state["shard_size"])
    _tracked(settings, state).log_metrics({"embed_shards": float(len(planned))})
    return planned


def embed(settings: Settings, state: State, shard: dict[str, Any]) -> dict[str, Any]:
    """One shard; a failure retries this shard alone. Its numbers reach MLflow summed, with build."""
    return shard_steps.embed_shard(Path(state["run_dir"]), process_embedder(settings), shard)


def build(settings: Settings, state: State, credentials: CredentialsLookup | None = None) -> dict[str, Any]:
    _tracked(settings, state).log_metrics(step_metrics("embed", shard_steps.embed_summary(Path(state["run_dir"]))))
    # The embedding the plan compared (plan.json): describing one here would start a runtime in a task
    # that embeds nothing. A plan written before plans recorded it has none.
    planned = read_json(Path(state["run_dir"]) / "plan.json")
    embedding = planned.get("embedding") or process_embedder(settings).describe()
    index = make_index(settings, credentials)
    built = _step(settings, state, "build", lambda: steps.build_version(
        Path(state["run_dir"]), index, embedding, bm25_params(settings)))  # fmt: skip
    # Kept from pruning (another run may publish meanwhile) while it is evaluated and, where the gate asks,
    # until a person answers: publishing it ends the hold, and finish releases one that was not published.
    index.hold(built["version"])
    return built


def evaluate(
    settings: Settings, state: State, version: str, credentials: CredentialsLookup | None = None
) -> dict[str, Any]:
    return _step(settings, state, "evaluate", lambda: steps.evaluate_candidate(
        make_index(settings, credentials), version, process_embedder(settings), settings))  # fmt: skip


def gate(settings: Settings, state: State, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Whether this version may be published without a person's approval."""
    decision = steps.gate_decision(evaluation, state["max_mrr_drop"], settings.gate_min_queries)
    _tracked(settings, state).log_metrics({"gate_needs_approval": float(decision["needs_approval"])})
    log.info("gate: %s", decision["reason"])
    return decision


def publish(
    settings: Settings, state: State, version: str, credentials: CredentialsLookup | None = None
) -> dict[str, Any]:
    return _step(settings, state, "publish", lambda: steps.publish_version(make_index(settings, credentials), version))


def finish(
    settings: Settings,
    state: State,
    done: dict[str, dict[str, Any] | None],
    credentials: CredentialsLookup | None = None,
) -> dict[str, Any]:
    """Write the run's report, attach the reports to MLflow and close the run."""
    run_dir = Path(state["run_dir"])
    # Skipped steps (publish after a rejection) hand over None; the shards left their sums in the lake.
    results = {k: v for k, v in done.items() if v}
    results["embed"] = shard_steps.embed_summary(run_dir)
    index = make_index(settings, credentials)
    if results.get("build") and not results.get("publish"):  # rejected, unanswered or held back
        index.release_hold(results["build"]["version"])
    report = steps.run_report(run_dir, results, index)
    counts = ("read", "indexed", "quarantined", "embedded", "unchanged", "deleted", "published")
    tracked = _tracked(settings, state)
    tracked.log_metrics({k: float(report[k]) for k in counts})
    tracked.log_artifacts(report_files(run_dir), folder="reports")
    tracked.finish()
    return report


def fail(settings: Settings, state: State | None) -> None:
    """Mark the MLflow run failed and keep the reports written so far (quarantine included)."""
    if not state:
        return
    tracked = _tracked(settings, state)
    tracked.log_artifacts(report_files(Path(state["run_dir"])), folder="reports")
    tracked.fail()


@dataclass
class _InProcess:
    """One run of every step in this process: the inputs beyond the state, and each step's result."""

    settings: Settings
    state: State
    storage_options: dict[str, Any] | None
    allow_worse: bool
    credentials: CredentialsLookup | None = None
    done: dict[str, Any] = field(default_factory=dict)

    def version(self) -> str:
        return str(self.done["build"]["version"])

    def publish_unless_held(self) -> dict[str, Any] | None:
        """Without a person to ask, a version the gate holds back is published only if `allow_worse`."""
        decision = self.done["gate"]
        if decision["needs_approval"] and not self.allow_worse:
            log.warning("not published: %s; re-run with --allow-worse to publish anyway", decision["reason"])
            return None
        return publish(self.settings, self.state, self.version(), self.credentials)

    def report(self) -> dict[str, Any]:
        """`finish` over the results the DAG hands it: the shards left theirs in the lake."""
        done = {k: v for k, v in self.done.items() if k not in ("shards", "embed")}
        return finish(self.settings, self.state, done, self.credentials)


# How each step after `begin` runs in one process, fed as the DAG feeds its task. The step functions
# are looked up when called, so a test can wrap them.
_IN_PROCESS: dict[str, Callable[[_InProcess], Any]] = {
    "validate": lambda r: validate(r.settings, r.state, r.storage_options),
    "plan": lambda r: plan(r.settings, r.state, r.credentials),
    "shards": lambda r: shards(r.settings, r.state),
    "embed": lambda r: [embed(r.settings, r.state, shard) for shard in r.done["shards"]],
    "profile": lambda r: profile(r.settings, r.state),
    "build": lambda r: build(r.settings, r.state, r.credentials),
    "evaluate": lambda r: evaluate(r.settings, r.state, r.version(), r.credentials),
    "gate": lambda r: gate(r.settings, r.state, r.done["evaluate"]),
    "publish": _InProcess.publish_unless_held,
    "finish": _InProcess.report,
}


def run_ingest(
    source: str,
    settings: Settings,
    full_refresh: bool = False,
    limit: int | None = None,
    run_id: str = "manual",
    storage_options: dict[str, Any] | None = None,
    allow_worse: bool = False,
    encoding: str | None = None,
    credentials: CredentialsLookup | None = None,
) -> dict[str, Any]:
    """Every step in `ORDER`, in this process. Without a person to ask, a version that the gate holds
    back is not published unless `allow_worse`. `encoding` is the source's (default: the setting);
    `credentials` Pinecone's (index.factory.make_index)."""
    params = {"source_uri": source, "full_refresh": full_refresh, "limit": limit, "encoding": encoding}
    state = begin(settings, run_id, params)
    local = _InProcess(settings, state, storage_options, allow_worse, credentials)
    try:
        for name in ORDER[1:]:
            local.done[name] = _IN_PROCESS[name](local)
    except Exception:
        fail(settings, state)
        raise
    return {**local.done["finish"], "mlflow_run_id": state["mlflow_run_id"]}
