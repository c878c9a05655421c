"""Where the vectors a Pinecone build sends come from, read only when their request is sent: rows of a raw
float32 file (the build's spilled upserts, or an embedded base's vectors.npy), or vectors fetched from a
base's namespace (a version of the earlier layout, or of another embedding's namespace).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patientinsight.index.pinecone_keys import record_keys
from patientinsight.index.pinecone_support import vector_id, vector_metadata
from patientinsight.index.spill import read_rows

VECTOR_META = ("uid", "content_hash", "age_years", "sex", "chunk_count")  # what a vector's metadata needs

Items = list[dict[str, Any]]


@dataclass
class VectorPart:
    """Records of the new version whose vectors come from one place, in staged order: `meta` holds their
    VECTOR_META columns; record i's vectors are rows `first_rows[i]`... of the raw float32 file `source`
    (after `offset` header bytes, `dim` wide), or, with no source, are fetched from `namespace` (ids of
    the shared layout when `shared`, else of the earlier one). They are sent under shared-layout ids."""

    meta: pa.Table
    first_rows: np.ndarray
    source: Path | None = None
    offset: int = 0
    dim: int = 0
    namespace: str | None = None
    shared: bool = False
    counts: np.ndarray = field(init=False)  # each record's chunk count
    ends: np.ndarray = field(init=False)  # the vector after each record's last, counted within the part

    def __post_init__(self) -> None:
        self.counts = self.meta.column("chunk_count").to_numpy().astype(np.int64)
        self.ends = np.cumsum(self.counts)

    @property
    def vectors(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def without(self, keys: pa.Array) -> VectorPart:
        """This part less the records whose vectors are already stored under these record keys."""
        if self.meta.num_rows == 0 or len(keys) == 0:
            return self
        keep = np.asarray(pc.invert(pc.is_in(record_keys(self.meta), value_set=keys)), dtype=bool)
        return dataclasses.replace(self, meta=self.meta.filter(pa.array(keep)), first_rows=self.first_rows[keep])

    def _locate(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, dict[str, list[Any]], int]:
        """For vectors [start, stop) of the part: each one's record, its chunk, and the records' columns."""
        wanted = np.arange(start, stop, dtype=np.int64)
        record = np.searchsorted(self.ends, wanted, side="right")
        chunk = wanted - (self.ends[record] - self.counts[record])
        first = int(record[0])
        columns = self.meta.slice(first, int(record[-1]) - first + 1).to_pydict()
        return record - first, chunk, columns, first

    def ids(self, start: int, stop: int, shared: bool = True) -> list[str]:
        """The ids of vectors [start, stop), in the shared layout or the earlier one."""
        record, chunk, columns, _ = self._locate(start, stop)
        uids, hashes = columns["uid"], columns["content_hash"]
        return [
            vector_id(str(uids[r]), int(c), str(hashes[r]) if shared else None)
            for r, c in zip(record, chunk, strict=True)
        ]

    def items(self, start: int, stop: int) -> Items:
        """Vectors [start, stop) of the part as upsert items, their values read from `source` now."""
        assert self.source is not None
        record, chunk, columns, first = self._locate(start, stop)
        values = read_rows(self.source, self.offset, self.dim, self.first_rows[record + first] + chunk)
        out = []
        for i, (r, c) in enumerate(zip(record, chunk, strict=True)):
            uid, content = str(columns["uid"][r]), str(columns["content_hash"][r])
            out.append({
                "id": vector_id(uid, int(c), content),
                "values": values[i].tolist(),
                "metadata": vector_metadata(uid, int(c), content, columns["age_years"][r], columns["sex"][r]),
            })  # fmt: skip
        return out
