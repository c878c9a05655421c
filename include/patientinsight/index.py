"""The vector index: one small interface, and the embedded, versioned implementation on local disk.

A version is immutable once committed. Publishing replaces one pointer file with os.replace, so a
reader sees the old version or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.lib import format as npy_format

# Columns every index version stores per record, beside its vectors.
META_COLUMNS = (
    "uid", "pmid", "title", "text", "age_years", "sex", "pub_date",
    "similar_patients", "relevant_articles", "content_hash",
)  # fmt: skip


# Records a search must not see: their uids, or a boolean mask over the version's records (True =
# hidden) from `EmbeddedReader.hidden`, for many uids at once.
Exclusion = Collection[str] | np.ndarray


@dataclass(frozen=True)
class Filters:
    """Optional restrictions on the cases a search may return."""

    age_min: float | None = None
    age_max: float | None = None
    sex: str | None = None

    def mask(self, age: np.ndarray, sex: np.ndarray) -> np.ndarray | None:
        """Boolean mask over records, or None when nothing is filtered."""
        keep = np.ones(len(age), dtype=bool)
        if self.age_min is not None:
            keep &= age >= self.age_min  # NaN ages compare False: unknown age fails an age filter
        if self.age_max is not None:
            keep &= age <= self.age_max
        if self.sex is not None:
            keep &= sex == self.sex.upper()
        return None if keep.all() else keep


@dataclass(frozen=True)
class Hit:
    uid: str
    score: float
    best_chunk: int  # index of the record's best-matching chunk, 0 for a single vector


@dataclass
class EmbeddedBatch:
    """Records (META_COLUMNS) and their vectors: record i owns `chunk_counts[i]` consecutive rows."""

    records: pd.DataFrame
    vectors: np.ndarray
    chunk_counts: np.ndarray

    def __post_init__(self) -> None:
        if len(self.records) != len(self.chunk_counts):
            raise ValueError("one chunk count per record is required")
        if int(self.chunk_counts.sum()) != len(self.vectors):
            raise ValueError("chunk counts must add up to the number of vectors")
        if len(self.chunk_counts) and int(self.chunk_counts.min()) < 1:
            raise ValueError("every record needs at least one vector")


class IndexReader(Protocol):
    version: str

    def count(self) -> int: ...
    def hashes(self) -> dict[str, str]: ...
    def search(
        self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()
    ) -> list[Hit]: ...
    def records(self, uids: list[str]) -> pd.DataFrame: ...


class VersionBuilder(Protocol):
    def upsert(self, batch: EmbeddedBatch) -> None: ...
    def delete(self, uids: list[str]) -> None: ...
    def commit(
        self,
        extras: Callable[[Path, pd.DataFrame], None] | None = None,
        staged_extras: Callable[[Path], None] | None = None,
    ) -> str: ...


class VectorIndex(Protocol):
    """What the pipeline and the service need of any index (embedded here, Pinecone in production)."""

    def published(self) -> str | None: ...
    def open(self, version: str) -> IndexReader: ...
    def builder(self, base: str | None, manifest: dict[str, Any]) -> VersionBuilder: ...
    def publish(self, version: str) -> None: ...


class EmbeddedIndex:
    """Versions under `root/versions/<id>/` (records.parquet, vectors.npy, manifest.json);
    `root/CURRENT` names the published one."""

    def __init__(self, root: Path, keep_versions: int = 5) -> None:
        self.root = Path(root)
        self.keep_versions = keep_versions
        self.versions_dir = self.root / "versions"

    def published(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def open(self, version: str) -> EmbeddedReader:
        return EmbeddedReader(self.versions_dir / version, version)

    def builder(self, base: str | None, manifest: dict[str, Any]) -> EmbeddedBuilder:
        return EmbeddedBuilder(self, base, manifest)

    def manifest(self, version: str) -> dict[str, Any]:
        return dict(json.loads((self.versions_dir / version / "manifest.json").read_text()))

    def publish(self, version: str) -> None:
        if not (self.versions_dir / version / "manifest.json").exists():
            raise FileNotFoundError(f"index version {version} does not exist")
        pointer = self.root / "CURRENT"
        tmp = self.root / f".CURRENT.{uuid.uuid4().hex}"
        tmp.write_text(version + "\n")
        tmp.replace(pointer)  # atomic on POSIX: readers never see a partial pointer
        self._prune(keep=version)

    def _prune(self, keep: str) -> None:
        committed = sorted(p.name for p in self.versions_dir.iterdir() if not p.name.startswith("."))
        old = [v for v in committed if v != keep][: max(0, len(committed) - self.keep_versions)]
        for name in old:
            shutil.rmtree(self.versions_dir / name, ignore_errors=True)


class EmbeddedReader:
    """A read-only view of one committed version. Vectors are memory-mapped, metadata loaded once."""

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self.manifest = json.loads((path / "manifest.json").read_text())
        self.vectors = np.load(path / "vectors.npy", mmap_mode="r")
        self._load_meta()

    def _load_meta(self) -> None:
        """What every search needs per record, as arrays: no frame, no content hashes (the ingest
        reads those on demand), so a serving process holds as little as it can."""
        meta = pq.read_table(self.path / "records.parquet", columns=["uid", "age_years", "sex", "chunk_count"])
        counts = meta.column("chunk_count").to_numpy().astype(np.int64)
        self._counts = counts
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self._uids = np.asarray(meta.column("uid").to_pylist(), dtype=object)
        self._age = meta.column("age_years").to_numpy(zero_copy_only=False).astype(np.float64)
        self._sex = np.asarray(meta.column("sex").to_pylist(), dtype=object)
        self._position_of: dict[str, int] | None = None

    def count(self) -> int:
        return len(self._uids)

    def uid_at(self, position: int) -> str:
        return str(self._uids[position])

    def positions(self, uids: Iterable[str]) -> np.ndarray:
        """Row positions of the given uids in this version; uids it does not hold are skipped."""
        if self._position_of is None:
            self._position_of = {str(uid): i for i, uid in enumerate(self._uids)}
        found = (self._position_of.get(uid) for uid in uids)
        return np.fromiter((p for p in found if p is not None), dtype=np.int64)

    def hidden(self, exclude: Exclusion = (), filters: Filters | None = None) -> np.ndarray | None:
        """A mask of the records to keep out of sight (True = hidden): those excluded (by uid, or a
        mask made by this method for many uids at once) and those the filters rule out; None when
        none are."""
        allowed = filters.mask(self._age, self._sex) if filters else None
        if isinstance(exclude, np.ndarray):
            mask = exclude.copy() if allowed is None else exclude | ~allowed
            return mask if mask.any() else None
        positions = self.positions(exclude) if exclude else np.empty(0, np.int64)
        if allowed is None and len(positions) == 0:
            return None
        mask = np.zeros(self.count(), dtype=bool) if allowed is None else ~allowed
        mask[positions] = True
        return mask

    def hashes(self) -> dict[str, str]:
        table = pq.read_table(self.path / "records.parquet", columns=["uid", "content_hash"])
        return dict(zip(table.column("uid").to_pylist(), table.column("content_hash").to_pylist(), strict=True))

    def scores(self, vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every record's score (its best chunk's cosine), and every chunk's score."""
        if self.count() == 0:
            return np.empty(0, np.float32), np.empty(0, np.float32)
        chunk_scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        return np.maximum.reduceat(chunk_scores, self._starts), chunk_scores

    def scores_at(self, vector: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The scores of the records at these positions only (their best chunk's cosine): a reranker
        reads a few hundred vectors instead of scanning them all."""
        if len(positions) == 0:
            return np.empty(0, np.float32)
        counts = self._counts[positions]
        firsts = np.cumsum(counts) - counts  # where each record's chunks begin in the gathered rows
        rows = np.repeat(self._starts[positions] - firsts, counts) + np.arange(int(counts.sum()))
        order = np.argsort(rows)  # read the memory map front to back
        gathered = np.empty(len(rows), dtype=np.float32)
        gathered[order] = np.asarray(self.vectors[rows[order]]) @ np.asarray(vector, dtype=np.float32)
        return np.maximum.reduceat(gathered, firsts)

    def search(self, vector: np.ndarray, k: int, filters: Filters | None = None, exclude: Exclusion = ()) -> list[Hit]:
        best, chunk_scores = self.scores(vector)
        hidden = self.hidden(exclude, filters)  # the filters too: `top` need not apply them again
        if hidden is not None:
            best = np.where(hidden, -np.inf, best)
        hits = []
        for i, score in self.top(best, k):
            start = self._starts[i]
            end = self._starts[i + 1] if i + 1 < len(self._starts) else len(chunk_scores)
            hits.append(Hit(str(self._uids[i]), score, int(np.argmax(chunk_scores[start:end]))))
        return hits

    def top(self, record_scores: np.ndarray, k: int, filters: Filters | None = None) -> list[tuple[int, float]]:
        """The k best (record position, score) pairs among the records the filters allow, best first:
        shared by every retriever, so filters mean the same everywhere."""
        if len(record_scores) == 0 or k <= 0:
            return []
        mask = filters.mask(self._age, self._sex) if filters else None
        if mask is not None:
            record_scores = np.where(mask, record_scores, -np.inf)
        k = min(k, int(np.isfinite(record_scores).sum()))
        if k == 0:
            return []
        top = np.argpartition(-record_scores, k - 1)[:k]
        top = top[np.argsort(-record_scores[top], kind="stable")]
        return [(int(i), float(record_scores[i])) for i in top]

    def records(self, uids: list[str]) -> pd.DataFrame:
        """The stored records of these uids (all META_COLUMNS), in the order asked."""
        table = pd.read_parquet(self.path / "records.parquet", filters=[("uid", "in", list(uids))])
        return table.set_index("uid").reindex(uids).reset_index()


# The schema of records.parquet: fixed, so that every batch (and the base) is written alike.
RECORD_SCHEMA = pa.schema(
    [
        *((name, pa.float64() if name == "age_years" else pa.string()) for name in META_COLUMNS),
        ("chunk_count", pa.int64()),
    ]
)
COPY_ROWS = 10_000  # base records copied at a time


@dataclass
class EmbeddedBuilder:
    """Collects upserts and deletes against a base version, and writes a new version on commit.

    Memory stays bounded by one batch: each upsert goes straight to disk in a spill folder beside
    the versions (records to a parquet file, vectors to a raw float32 file), removed when the builder
    commits or is dropped; the commit streams the base's kept rows and then the upserts into the
    staged records.parquet and vectors.npy."""

    index: EmbeddedIndex
    base: str | None
    manifest: dict[str, Any]
    _deletes: set[str] = field(default_factory=set)
    _upserted: set[str] = field(default_factory=set)
    _spill: tempfile.TemporaryDirectory[str] | None = None
    _writer: pq.ParquetWriter | None = None
    _upserted_vectors: int = 0
    _dim: int | None = None

    def upsert(self, batch: EmbeddedBatch) -> None:
        spill = self._spill_dir()
        frame = batch.records.loc[:, list(META_COLUMNS)].assign(chunk_count=batch.chunk_counts.astype(np.int64))
        table = pa.Table.from_pandas(frame, schema=RECORD_SCHEMA, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(spill / "upserts.parquet", RECORD_SCHEMA)
        self._writer.write_table(table)
        vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        if self._dim is None:
            self._dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        with (spill / "upserts.f32").open("ab") as f:
            vectors.tofile(f)
        self._upserted_vectors += len(vectors)
        self._upserted.update(batch.records["uid"])

    def delete(self, uids: list[str]) -> None:
        self._deletes.update(uids)

    def commit(
        self,
        extras: Callable[[Path, pd.DataFrame], None] | None = None,
        staged_extras: Callable[[Path], None] | None = None,
    ) -> str:
        """Write the new version; `extras` adds files built from its records (the lexical index)
        inside the staging folder, so they appear together with the vectors or not at all.
        `staged_extras` does the same from the staged folder alone (it reads records.parquet there
        batch by batch), so the records never sit in memory as one frame."""
        self.index.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.index.versions_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            version = self._write(staging, extras, staged_extras)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # nothing half-written stays behind
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
            if self._spill is not None:
                self._spill.cleanup()
            self._spill = self._writer = None
        return version

    def _write(
        self,
        staging: Path,
        extras: Callable[[Path, pd.DataFrame], None] | None,
        staged_extras: Callable[[Path], None] | None,
    ) -> str:
        if self._writer is not None:
            self._writer.close()
        base_path = self.index.versions_dir / self.base if self.base is not None else None
        keep = self._kept_base_rows(base_path)
        base_vectors = np.load(base_path / "vectors.npy", mmap_mode="r") if base_path is not None else None
        dim = self._dim if self._dim is not None else int(self.manifest.get("dim", 0))
        if base_vectors is not None and self._dim is None:
            dim = int(base_vectors.shape[1])
        kept_vectors = int(keep[1][keep[0]].sum()) if keep is not None else 0
        total = kept_vectors + self._upserted_vectors
        with (
            pq.ParquetWriter(staging / "records.parquet", RECORD_SCHEMA) as writer,
            (staging / "vectors.npy").open("wb") as matrix,
        ):
            # The .npy header first, then the rows as they come: written, never held or mapped.
            header = {
                "descr": npy_format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": (total, dim),
            }
            npy_format.write_array_header_1_0(matrix, header)
            if base_path is not None and keep is not None and base_vectors is not None:
                _copy_base(base_path, keep[0], base_vectors, writer, matrix)
            if self._writer is not None:
                _copy_upserts(self._spill_dir(), dim, writer, matrix)

        version = datetime.now(UTC).strftime("v%Y%m%dT%H%M%S%fZ")
        records_count = pq.ParquetFile(staging / "records.parquet").metadata.num_rows
        manifest = {
            **self.manifest,
            "version": version,
            "parent": self.base,
            "records": records_count,
            "vectors": total,
            "created_at": datetime.now(UTC).isoformat(),
        }
        if extras is not None:
            extras(staging, _read_records(staging / "records.parquet"))
        if staged_extras is not None:
            staged_extras(staging)
        if extras is not None or staged_extras is not None:
            _release_freed_memory()
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        staging.rename(self.index.versions_dir / version)  # a version appears whole or not at all
        return version

    def _spill_dir(self) -> Path:
        if self._spill is None:
            self.index.root.mkdir(parents=True, exist_ok=True)
            # Deleted on commit, or when an abandoned builder is collected (or at exit).
            self._spill = tempfile.TemporaryDirectory(prefix=".build-", dir=self.index.root)
        return Path(self._spill.name)

    def _kept_base_rows(self, base_path: Path | None) -> tuple[np.ndarray, np.ndarray] | None:
        """Which base records stay (not deleted, not replaced by an upsert), and every base record's
        chunk count; only these two columns are read."""
        if base_path is None:
            return None
        table = pq.read_table(base_path / "records.parquet", columns=["uid", "chunk_count"])
        replaced = pa.array(sorted(self._deletes | self._upserted), type=pa.string())
        keep = np.asarray(pc.invert(pc.is_in(table.column("uid"), value_set=replaced)), dtype=bool)
        return keep, table.column("chunk_count").to_numpy().astype(np.int64)


def _release_freed_memory() -> None:
    """Give the memory of the records just freed back to the system. Python frees them, but glibc
    keeps freed heap pages (and Arrow its pool) for reuse, so a 250,000-record build would leave
    ~1.5 GB resident into the steps after it (measured: benchmarks/scale_250k.py)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read_records(path: Path) -> pd.DataFrame:
    """records.parquet as one frame, converted COPY_ROWS at a time: reading it whole would hold the
    Arrow copy and the pandas copy of every text at once (twice the text, ~1.8 GB for 250,000)."""
    frames = [rows.to_pandas() for rows in pq.ParquetFile(path).iter_batches(batch_size=COPY_ROWS)]
    frame = pd.concat(frames, ignore_index=True) if frames else pq.read_table(path).to_pandas()
    pa.default_memory_pool().release_unused()  # hand the Arrow buffers back rather than keep them pooled
    return frame


def _read_rows(vectors: np.memmap, start: int, count: int) -> np.ndarray:
    """Rows [start, start + count) of a memory-mapped .npy, read into memory: pages of a long-lived
    map would count as resident until it closes."""
    dim = int(vectors.shape[1])
    data = np.fromfile(
        str(vectors.filename), dtype=np.float32, count=count * dim, offset=vectors.offset + start * dim * 4
    )
    return data.reshape(count, dim)


def _copy_base(base_path: Path, keep: np.ndarray, vectors: np.memmap, writer: pq.ParquetWriter, out: IO[bytes]) -> None:
    """The kept base records and their vectors, COPY_ROWS records at a time."""
    start = source_row = 0
    for rows in pq.ParquetFile(base_path / "records.parquet").iter_batches(batch_size=COPY_ROWS):
        mask = keep[start : start + rows.num_rows]
        chunk_mask = np.repeat(mask, rows.column("chunk_count").to_numpy().astype(np.int64))
        _read_rows(vectors, source_row, len(chunk_mask))[chunk_mask].tofile(out)
        writer.write_batch(rows.filter(pa.array(mask)).cast(RECORD_SCHEMA))
        start += rows.num_rows
        source_row += len(chunk_mask)


def _copy_upserts(spill: Path, dim: int, writer: pq.ParquetWriter, out: IO[bytes]) -> None:
    """The upserted records and their vectors after the base's, one written row group at a time."""
    source_row = 0
    parquet = pq.ParquetFile(spill / "upserts.parquet")
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        n = int(pc.sum(table.column("chunk_count")).as_py() or 0)
        offset = source_row * dim * 4
        np.fromfile(spill / "upserts.f32", dtype=np.float32, count=n * dim, offset=offset).tofile(out)
        writer.write_table(table)
        source_row += n
