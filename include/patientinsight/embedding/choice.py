"""The measured choice of 'auto', kept in the model cache: measured once per machine (CPU model and
flags, ISA caps), thread count, batch size, candidates, library versions and quality rule, so that a new
machine or a new library measures again and every later process (a worker, the service, a test) reads
the file instead of measuring. Concurrent first users wait on a file lock: one measures, the others read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from patientinsight.embedding import measure, quality
from patientinsight.embedding.hardware import ISA_CAPS, Choice, Pair, cpu_flags, cpu_model
from patientinsight.embedding.measure import Row

log = logging.getLogger(__name__)

FOLDER = "embedding-choice"
LIBRARIES = ("torch", "onnxruntime", "openvino", "nncf", "sentence-transformers", "transformers", "tokenizers")


def key_spec(model_name: str, pairs: Sequence[Pair], threads: int, batch_size: int) -> dict[str, Any]:
    """Everything the measured speeds and vectors depend on."""
    return {
        "model": model_name,
        "cpu": cpu_model(),
        "flags": sorted(cpu_flags()),
        "isa_caps": {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)},
        "threads": threads,
        "batch_size": batch_size,
        "candidates": [list(pair) for pair in pairs],
        "versions": {name: _version(name) for name in LIBRARIES},
        "protocol": {
            "texts": measure.CHECK_TEXTS,
            "seed": measure.CHECK_SEED,
            "rounds": measure.ROUNDS,
            "queries": measure.QUERY_TIMINGS,
            "query_words": measure.QUERY_WORDS,
        },
        "rule": [quality.EXACT_MIN_COSINE, quality.INT8_MIN_COSINE, quality.INT8_MEAN_COSINE],
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cache_file(cache_dir: Path, spec: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / FOLDER / f"{digest}.json"


@dataclass(frozen=True)
class Measured:
    choice: Choice
    rows: list[Row]
    measured_at: str
    path: Path
    fresh: bool  # measured by this call (else read from the cache)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.choice.backend,
            "precision": self.choice.precision,
            "reason": self.choice.reason,
            "measured_at": self.measured_at,
            "cache": str(self.path),
            "fresh": self.fresh,
            "table": [row.as_dict() for row in self.rows],
        }


_memo: dict[Path, Measured] = {}
_memo_lock = threading.Lock()


def measured_choice(
    cache_dir: Path, spec: dict[str, Any], run: Callable[[], list[Row]], again: bool = False
) -> Measured:
    """The cached choice for `spec`, or a new measurement (`run`), written to the cache and logged."""
    path = cache_file(cache_dir, spec)
    with _memo_lock:  # one measurement per process at a time; the others wait for it
        if not again and path in _memo:
            return _memo[path]
        found = None if again else _read(path)
        if found is None:
            with _file_lock(path):
                found = None if again else _read(path)  # measured by another process meanwhile
                if found is None:
                    found = _measure(path, spec, run)
        _memo[path] = found
        return found


def _measure(path: Path, spec: dict[str, Any], run: Callable[[], list[Row]]) -> Measured:
    rows = run()
    pair, why = measure.decide(rows)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    found = Measured(Choice(*pair, "cpu", f"measured on this machine, {why}"), rows, now, path, True)
    log.info(
        "embedding choice measured (%d threads, %d generated texts): %s => %s %s: %s",
        spec["threads"], measure.CHECK_TEXTS, measure.table_text(rows), pair[0], pair[1], why,
    )  # fmt: skip
    try:
        _write(path, {"key": spec, **found.as_dict()})
    except OSError as exc:  # a read-only cache (a pod whose image was built on another CPU): keep it in memory
        log.warning("embedding choice not cached (%s: %s): the next process measures again", type(exc).__name__, exc)
    return found


def _read(path: Path) -> Measured | None:
    try:
        data = json.loads(path.read_text())
        rows = [Row(**row) for row in data["table"]]
        choice = Choice(data["backend"], data["precision"], "cpu", data["reason"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: measure (and rewrite)
        return None
    return Measured(choice, rows, str(data["measured_at"]), path, False)


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)  # atomic: a reader sees the old file or the new one
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cached file; none where the cache cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.with_suffix(".lock").open("a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
