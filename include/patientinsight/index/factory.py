"""The configured vector index: embedded by default, Pinecone when `index_backend` says so."""

from __future__ import annotations

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.types import VectorIndex
from patientinsight.settings import Settings


def make_index(settings: Settings) -> VectorIndex:
    """The configured index. Both keep their records, manifests and CURRENT pointer in the same lake
    layout (index.versions), so every step works on either, and a lake switches backend as it is."""
    if settings.index_backend == "pinecone":
        from patientinsight.airflow.connections import pinecone_credentials
        from patientinsight.index.pinecone import PineconeIndex
        from patientinsight.index.pinecone_support import PineconeOptions

        api_key, conn_host = pinecone_credentials(settings.pinecone_conn_id or None)
        options = PineconeOptions(
            index_name=settings.pinecone_index_name,
            api_key=api_key,
            controller_host=settings.pinecone_host or conn_host,
            cloud=settings.pinecone_cloud,
            region=settings.pinecone_region,
            batch_size=settings.pinecone_batch_size,
            concurrency=settings.pinecone_concurrency,
            max_retries=settings.pinecone_max_retries,
            backoff_s=settings.pinecone_backoff_s,
            timeout_s=settings.pinecone_timeout_s,
            ready_timeout_s=settings.pinecone_ready_timeout_s,
        )
        return PineconeIndex(settings.index_dir, options, keep_versions=settings.keep_versions)
    return EmbeddedIndex(settings.index_dir, keep_versions=settings.keep_versions)
