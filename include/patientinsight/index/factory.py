"""The configured vector index: embedded by default, Pinecone when `index_backend` says so."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.types import VectorIndex
from patientinsight.settings import Settings

if TYPE_CHECKING:
    from patientinsight.index.pinecone_support import PineconeCredentials

# The caller's way to find Pinecone's credentials for a connection id (airflow.connections.pinecone_credentials):
# looked up only when the index is Pinecone's, so an embedded lake never asks Airflow for a connection.
CredentialsLookup = Callable[[str], "PineconeCredentials"]


def make_index(settings: Settings, credentials: CredentialsLookup | None = None) -> VectorIndex:
    """The configured index. Both keep their records, manifests and CURRENT pointer in the same lake
    layout (index.versions), so every step works on either, and a lake switches backend as it is.
    Without credentials (or an API key among them), the Pinecone client reads PINECONE_API_KEY."""
    if settings.index_backend == "pinecone":
        from patientinsight.index.pinecone import PineconeIndex
        from patientinsight.index.pinecone_support import PineconeOptions

        found = credentials(settings.pinecone_conn_id) if credentials is not None else None
        options = PineconeOptions.from_settings(settings, found)
        return PineconeIndex(settings.index_dir, options, keep_versions=settings.keep_versions)
    return EmbeddedIndex(settings.index_dir, keep_versions=settings.keep_versions)
