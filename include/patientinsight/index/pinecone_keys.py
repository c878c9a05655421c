"""Which vectors the versions of the shared layout reference, read from the lake (index.pinecone has the
design): the lake's id names its namespaces, and a record's uid, content hash and chunk count name its
vectors (pinecone_support.vector_id), so the lake alone says what a version needs in Pinecone. The
builder skips what kept versions already hold; pruning and orphan collection delete only what none of
them references.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from patientinsight.index.pinecone_support import FOLDER, HASH_CHARS, is_shared, shared_namespace, vector_id
from patientinsight.index.records import VersionRecords
from patientinsight.index.versions import VersionStore, read_manifest

KEY_COLUMNS = ("uid", "content_hash", "chunk_count")
LAKE_ID = "lake-id"  # in <root>/pinecone/: part of the shared namespaces' names


def lake_id(root: Path) -> str:
    """The lake's id, made by its first build and kept in `<root>/pinecone/` (travels with the lake)."""
    path = root / FOLDER / LAKE_ID
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        made = path.with_name(f".{LAKE_ID}.{uuid.uuid4().hex}")
        made.write_text(uuid.uuid4().hex[:12])
        with contextlib.suppress(FileExistsError):  # another build made it first: its id stands
            os.link(made, path)
        made.unlink()
    return path.read_text().strip()


def lake_namespace(root: Path, manifest: dict[str, Any]) -> str:
    """The shared namespace of the lake's versions embedded as `manifest` says (pinecone_support)."""
    return shared_namespace(manifest, lake_id(root))


def version_keys(folder: Path) -> pa.Table:
    """uid, content hash and chunk count of each of the version's records (index.records reads its
    layout)."""
    records = VersionRecords(folder)
    return pa.table({name: records.live_column(name) for name in KEY_COLUMNS})


def record_keys(table: pa.Table) -> pa.ChunkedArray:
    """'<uid>#<hash prefix>' per record: the part its vector ids share."""
    prefix = pc.utf8_slice_codeunits(table.column("content_hash"), 0, HASH_CHARS)
    return pc.binary_join_element_wise(table.column("uid"), prefix, "#")


def versions_in(store: VersionStore, namespace: str) -> list[Path]:
    """The committed versions whose vectors are in this shared namespace."""
    out = []
    for name in store.committed():
        folder = store.path(name)
        try:
            manifest = read_manifest(folder)
        except FileNotFoundError:  # a pruned version's folder, going (or a version still being written)
            continue
        if is_shared(manifest) and manifest.get("namespace") == namespace:
            out.append(folder)
    return out


def referenced(folders: Iterable[Path]) -> pa.Array:
    """The record keys of these versions, each once."""
    keys = [chunk for folder in folders for chunk in record_keys(version_keys(folder)).chunks]
    return pc.unique(pa.chunked_array(keys, type=pa.string()))


def unreferenced(table: pa.Table, keys: pa.Array) -> pa.Table:
    """The rows of `table` (KEY_COLUMNS at least) whose record key is not among `keys`."""
    if table.num_rows == 0 or len(keys) == 0:
        return table
    return table.filter(pc.invert(pc.is_in(record_keys(table), value_set=keys)))


def vector_ids(table: pa.Table) -> list[str]:
    """Every vector id of these records (KEY_COLUMNS), in the shared layout."""
    columns = [table.column(name).to_pylist() for name in KEY_COLUMNS]
    return [vector_id(u, c, h) for u, h, n in zip(*columns, strict=True) for c in range(int(n))]
