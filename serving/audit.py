"""The audit trail: one row per query (time, key id, index version, returned uids), in any SQL database.

Rows are written by one background thread in small batches, so a query never waits on the database
and SQLite sees a single writer.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, create_engine, insert, select
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger(__name__)

metadata = MetaData()
query_audit = Table(
    "query_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("key_id", String(128), nullable=False),
    Column("index_version", String(64)),
    Column("k", Integer, nullable=False),
    Column("text_length", Integer, nullable=False),
    Column("text_sha256", String(16), nullable=False),  # a prefix of the hash: links repeats, reveals nothing
    Column("generator", String(32)),
    Column("generator_error", Text),
    Column("returned_uids", Text, nullable=False),  # JSON list, in rank order
    Column("status", Integer, nullable=False),
)


def make_audit_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, pool_pre_ping=True)


class AuditLog:
    def __init__(self, url: str) -> None:
        self.engine = make_audit_engine(url)
        metadata.create_all(self.engine)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10000)
        self._thread = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._thread.start()

    def record(
        self,
        key_id: str,
        index_version: str | None,
        k: int,
        text_length: int,
        text_sha256: str,
        returned_uids: list[str],
        generator: str | None,
        generator_error: str | None,
    ) -> None:
        row = {
            "at": datetime.now(UTC),
            "key_id": key_id,
            "index_version": index_version,
            "k": k,
            "text_length": text_length,
            "text_sha256": text_sha256,
            "generator": generator,
            "generator_error": generator_error,
            "returned_uids": json.dumps(returned_uids),
            "status": 200,  # only answered queries are audited; the column stays for existing tables
        }
        try:
            self._queue.put_nowait(row)
        except queue.Full:  # the database is down or slow: say so, but keep answering
            log.error("audit queue full: a query's audit record was not written")

    def _write_loop(self) -> None:
        while True:
            row = self._queue.get()
            if row is None:
                return
            batch = [row]
            while len(batch) < 200:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._flush(batch)
                    return
                batch.append(more)
            self._flush(batch)

    def _flush(self, batch: list[dict[str, Any]]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(query_audit), batch)
        except Exception:  # never take the service down over the audit store; the error is logged
            log.exception("could not write %d audit records", len(batch))

    def close(self, timeout_s: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)
        self.engine.dispose()


def read_audit(url: str) -> list[dict[str, Any]]:
    """All audit rows, oldest first (for operators and tests)."""
    engine = make_audit_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(query_audit).order_by(query_audit.c.id)).mappings().all()
        return [{**row, "returned_uids": json.loads(row["returned_uids"])} for row in rows]
    finally:
        engine.dispose()
