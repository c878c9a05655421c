"""The production vector index: Pinecone serverless, behind the interface of index.types. This module
holds the backend's design and the index (versions, publishing, pruning); the one client (SDK, index
handle, retries, the calls) that the index, its reader and its builder share is index.pinecone_client,
and the reader, builder, vector sources (parts), keys, pruning (gc), freshness, retries and vocabulary
(support) are the other pinecone_* modules beside it.

Design
------
What lives where.
    The lake keeps, per version, exactly what the embedded index keeps except the vectors:
    `<index_dir>/versions/<version>/` holds records.parquet (the records, their content hashes and
    chunk counts), the BM25 lexical index the pipeline adds through `commit(staged_extras=...)`, and
    manifest.json (with `"backend": "pinecone"`, the Pinecone index and the namespace). The vectors
    live in Pinecone. So the lexical and hybrid retrievers, the evaluation and the service read the
    lake as before, and only dense scoring goes over the network. `<index_dir>/CURRENT` is the same
    pointer file, replaced atomically with os.replace: both backends keep their version folders, the
    pointer and the pruning with index.versions, and the per-record metadata with index.records.
    `<index_dir>/pinecone/` holds the lake's id and the builds' write lock and journals
    (index.pinecone_gc).

One shared namespace per lake and embedding, content-addressed vectors.
    A record's vectors have ids `<uid>#<first 16 hex of its content hash>#<chunk>` and live in the one
    namespace of the version's lake and embedding (`vectors-<lake id>-<digest of model, chunking,
    numerics>`): the lake's id keeps lakes that share a Pinecone index apart, since each prunes by its
    own versions only. A vector is written once and never changed: the same id always means the same
    contents embedded the same way, so every version that holds a record's contents shares its
    vectors, and a new version writes only what no kept version of the namespace holds. A 100-record
    update into 250,000 records writes its ~100 records' vectors, not 250,000 copies
    (docs/PERFORMANCE.md, "Into Pinecone").
Why this and not the alternatives.
    A namespace per version (this backend's first layout) made a version immutable, but every version
    copied all of its base's vectors: the cost of a small update grew with the corpus. Updating one
    live namespace in place would break the gate (it evaluates a version before what the published one
    serves changes) and rollback. A version label in each vector's metadata would need a metadata
    update of every kept vector per version. Delta namespaces (a version = its base's namespaces plus
    a small one) would cost one query per namespace and merges to bound them.
What each guarantee rests on.
    - A version is its lake folder (records with uid and content hash, lexical index, manifest with
      `"vector_layout": "shared"` and the namespace): it names exactly the vectors it needs, and no
      other version's write can change them (content addressing; and a build skips what kept versions
      hold, so it never even rewrites them).
    - Readers drop the matches of other versions (index.pinecone_reader): a match counts only when its
      uid and hash are the version's own. `search` asks for more until it has k of its own records, so
      the k best are exact; the rerank pool is scored from the records' own vectors, fetched by id.
    - Atomic publish and the gate: the commit waits until searches see every vector it wrote (log
      positions, index.pinecone_freshness) before the folder appears; publishing switches CURRENT;
      nothing the published version reads is written or deleted meanwhile. Rollback is the same switch
      to any kept version: its vectors are kept with it.
    - Pruning (index.pinecone_gc) deletes a pruned version's vectors that no kept version references,
      never while a build writes; the last version of a namespace takes the namespace with it. A build
      lists what it writes in a journal first, so what a failed or killed build wrote is deleted by the
      next prune, unless a kept version references it.
Versions of the earlier layout.
    A version without `vector_layout` keeps a namespace of its own (named by its id, ids
    `<uid>#<chunk>`): it is still read, rolled back to and pruned (its namespace emptied) as before. A
    build on such a base copies its kept vectors into the shared namespace once, as a build on an
    embedded base reads them from the lake's vectors.npy: nothing is re-embedded.

Records and chunks.
    A record owns `chunk_count` vectors with metadata `uid`, `chunk`, `content_hash`, and `age_years` /
    `sex` when known (never text: no patient text leaves the lake). A record's score is its best chunk's
    cosine, as in the embedded index.

Metric.
    Dense only, cosine: the embeddings are normalized sentence-transformer vectors and the embedded
    index scores by cosine, so scores match across backends. Lexical retrieval is BM25 over the lake
    (with RM3 expansion and a z-scored hybrid), which Pinecone's sparse-dense `dotproduct` records
    cannot express; a sparse half in Pinecone would duplicate the lexical index and force
    `dotproduct` on the dense half without serving the retrievers we use.

Filters.
    Age range and sex are Pinecone metadata filters (`$gte`/`$lte` on age_years, `$eq` on sex), so
    the server returns only allowed cases. A record of unknown age has no `age_years` field and fails
    any age filter, exactly like NaN in the embedded index.

Content hashes.
    They are in each vector's id and metadata and in records.parquet, written by the same commit.
    `hashes()` reads the lake, so incremental ingestion skips unchanged records exactly as with the
    embedded index; `remote_hashes()` fetches the version's vectors back by id to check that Pinecone
    holds what the lake says.

Writes and failures.
    Upserts go in batches (`batch_size` vectors) on `concurrency` threads. Every call is retried in
    one layer, ours (index.pinecone_retries has the why): the SDK's own retries are off, and each
    batch, query or fetch is tried up to `max_retries + 1` times on 408, 429, 5xx, connection errors
    and timeouts, with exponential backoff, full jitter and Retry-After respected. A batch that still
    fails raises `PineconeIndexError` naming the index, namespace and last error; no version folder
    appears, so nothing can be published, and what the build wrote goes at once (or at the next
    prune) unless a kept version references it.

Credentials.
    The caller passes them in (index.factory.make_index): the Airflow layer, the CLI and the service
    read the Airflow connection (`pinecone_default`, its password) when Airflow and the connection
    exist; without a key, the client reads PINECONE_API_KEY. The control-plane host is the
    `pinecone_host` setting, the connection's host, or the SDK default (PINECONE_CONTROLLER_HOST, else
    api.pinecone.io).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from patientinsight.index import pinecone_gc
from patientinsight.index.pinecone_builder import PineconeBuilder
from patientinsight.index.pinecone_client import PineconeClient
from patientinsight.index.pinecone_keys import lake_namespace
from patientinsight.index.pinecone_reader import PineconeReader
from patientinsight.index.pinecone_support import PineconeIndexError, PineconeOptions, is_shared
from patientinsight.index.versions import VersionStore

log = logging.getLogger(__name__)


class PineconeIndex:
    """Versions as sets of content-addressed vectors in one Pinecone serverless index; records, lexical
    index, manifests and the CURRENT pointer in the lake under `root` (see the module docstring)."""

    def __init__(self, root: Path, options: PineconeOptions, keep_versions: int = 5) -> None:
        self.versions = VersionStore(root, keep_versions, release=self._release)
        self.root = self.versions.root
        self.versions_dir = self.versions.versions_dir
        self.options = options
        self.client = PineconeClient(options)

    # -- the VectorIndex interface ---------------------------------------------------------------
    def published(self) -> str | None:
        return self.versions.published()

    def manifest(self, version: str) -> dict[str, Any]:
        return self.versions.manifest(version)

    def open(self, version: str) -> PineconeReader:
        return PineconeReader(self.versions.path(version), version, self.client)

    def builder(self, base: str | None, manifest: dict[str, Any]) -> PineconeBuilder:
        return PineconeBuilder(self.client, self.versions, base, manifest)

    def publish(self, version: str) -> None:
        """Switch CURRENT, prune (index.versions, releasing what pruned versions alone held), and delete
        what builds that did not finish left in Pinecone."""
        self.versions.publish(version)
        pinecone_gc.collect_orphans(self.client, self.versions)

    def hold(self, version: str) -> None:
        self.versions.hold(version)

    def release_hold(self, version: str) -> None:
        self.versions.release_hold(version)

    def namespace_for(self, manifest: dict[str, Any]) -> str:
        """The shared namespace of this lake's versions embedded as `manifest` says (index.pinecone_keys)."""
        return lake_namespace(self.root, manifest)

    def _release(self, version: str, manifest: dict[str, Any] | None) -> bool:
        """A pruned version's vectors that no kept version uses go with its folder (the shared layout);
        a version of the earlier layout takes its namespace; one from the embedded index has none."""
        if manifest is None or not manifest.get("namespace"):
            return True
        if is_shared(manifest):
            return pinecone_gc.release(self.client, self.versions, version, manifest)
        namespace = str(manifest["namespace"])
        try:
            self.client.drop_namespace(namespace)
        except PineconeIndexError as exc:  # published already: the next publish retries
            log.warning("could not remove old version %s from Pinecone: %s", version, exc)
            return False
        return True
