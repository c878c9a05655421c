"""The query audit log on PostgreSQL, its production store: a real uvicorn service writing to the local
PostgreSQL server (a database of its own per test, dropped after), under concurrent queries, with no
query text in any column; and the service answering while the database is unreachable (a TCP proxy in
front of it, stopped and started), then catching up, with what failed and what was lost in /metrics.

PATIENTINSIGHT_TEST_POSTGRES overrides the server's URL (as for the Airflow stack tests); the tests skip,
saying why, only when that server cannot be reached."""

from __future__ import annotations

import contextlib
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from serving.audit import AuditLog, read_audit
from serving.bookkeeping import text_fingerprint
from serving.metrics import Metrics
from tests.http_server import free_port
from tests.integration.airflow_stack import PG_URL, _pg_admin
from tests.serving.conftest import API_KEY, OTHER_KEY, keys_setting, served

COLUMNS = {
    "id", "at", "key_id", "index_version", "k", "text_length", "text_sha256", "generator", "generator_error",
    "returned_uids", "status",
}  # fmt: skip


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the PostgreSQL server: its name; dropped after the test."""
    psycopg2 = pytest.importorskip("psycopg2", reason="the psycopg2 driver is not installed")
    try:
        psycopg2.connect(f"{PG_URL}/postgres", connect_timeout=3).close()
    except psycopg2.Error as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} cannot be reached ({str(exc).strip()}); set PATIENTINSIGHT_TEST_POSTGRES")
    name = f"patientinsight_audit_{secrets.token_hex(4)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def audit_url(database: str, port: int | None = None) -> str:
    """The SQLAlchemy URL of `database`: on the server itself, or through a proxy on `port`."""
    server = make_url(PG_URL)
    host, port = ("127.0.0.1", port) if port is not None else (server.host or "127.0.0.1", server.port or 5432)
    return str(server.set(drivername="postgresql+psycopg2", host=host, port=port, database=database))


class TcpProxy:
    """127.0.0.1:`port` forwarded to the PostgreSQL server. `stop` closes the port and cuts every open
    connection (the database is unreachable: connections are refused); `start` opens the same port again."""

    def __init__(self) -> None:
        server = make_url(PG_URL)
        self.target = (server.host or "127.0.0.1", server.port or 5432)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy()
    try:
        yield proxy
    finally:
        proxy.stop()


def audited(url: str) -> list[dict[str, Any]]:
    """The audit rows; none while the service has not yet created its table."""
    try:
        return read_audit(url)
    except ProgrammingError:
        return []


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text (0 when absent)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def scraped(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text


def service_env(url: str) -> dict[str, str]:
    return {
        "PATIENTINSIGHT_API_KEYS": keys_setting(),
        "PATIENTINSIGHT_RATE_LIMIT_PER_MINUTE": "100000",
        "PATIENTINSIGHT_AUDIT_DB_URL": url,
    }


def raw_rows(database: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Every column of every row of the audit table, read with plain SQL (not through the service's model)."""
    import psycopg2

    conn = psycopg2.connect(f"{PG_URL}/{database}", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM query_audit ORDER BY id")
            names = [d[0] for d in cur.description or ()]
            return names, cur.fetchall()
    finally:
        conn.close()


def test_concurrent_queries_are_each_audited_and_no_text_is_stored(
    built_home: Path, tmp_path: Path, database: str
) -> None:
    # A random word per run, of letters that no hex hash and no digit uid holds: the hex token it replaces
    # was found inside a stored value once in a clean-clone run, failing the check below by chance.
    run_word = "".join(secrets.choice("ghijklmnopqrstuvwxyz") for _ in range(8))
    secrets_of = [f"Quixotic{i:02d} zebrafish-allergy nystagmus {run_word}" for i in range(48)]
    url = audit_url(database)
    with served(built_home, tmp_path, service_env(url)).running() as service:

        def ask(i: int) -> dict[str, Any]:
            with service.client(API_KEY if i % 2 else OTHER_KEY) as client:
                response = client.post("/v1/query", json={"text": secrets_of[i], "k": 3})
            assert response.status_code == 200, response.text
            return dict(response.json())

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(ask, range(len(secrets_of))))
        rows = wait_for(lambda: (r := audited(url)) and len(r) >= len(secrets_of) and r, "48 audit rows")
        text = scraped(service.url)
    assert len(rows) == len(secrets_of)
    assert metric(text, "patientinsight_audit_records_written_total") == len(secrets_of)
    assert metric(text, "patientinsight_audit_write_failures_total") == 0
    assert metric(text, "patientinsight_audit_records_dropped_total") == 0
    by_hash = {row["text_sha256"]: row for row in rows}
    for i, (secret, answer) in enumerate(zip(secrets_of, answers, strict=True)):
        row = by_hash[text_fingerprint(secret)]
        assert row["key_id"] == ("clinic-a" if i % 2 else "clinic-b")
        assert row["text_length"] == len(secret) and row["k"] == 3
        assert row["index_version"] == answer["index_version"]
        assert row["returned_uids"] == [case["patient_uid"] for case in answer["cases"]]
    names, values = raw_rows(database)
    assert set(names) == COLUMNS  # no column the model does not know of
    words = {word for secret in secrets_of for word in re.findall(r"[A-Za-z0-9-]{6,}", secret)}
    for value in (v for row_values in values for v in row_values if v is not None):
        assert not any(word in str(value) for word in words), "a query's text reached the audit table"


def test_the_service_answers_while_the_audit_database_is_away_and_catches_up(
    built_home: Path, tmp_path: Path, database: str, proxy: TcpProxy
) -> None:
    url = audit_url(database, proxy.port)  # the proxy is not started: the database is away from the start
    with served(built_home, tmp_path, service_env(url)).running() as service, service.client(API_KEY) as client:

        def ask(n: int) -> None:
            for i in range(n):
                response = client.post("/v1/query", json={"text": f"fever and cough, case {i}", "k": 2})
                assert response.status_code == 200, response.text  # never a failed query

        ask(3)
        wait_for(lambda: metric(scraped(service.url), "patientinsight_audit_write_failures_total") >= 1, "a failure")
        text = scraped(service.url)
        assert metric(text, "patientinsight_audit_backlog") == 3
        assert "audit database unreachable" in service.log()

        proxy.start()  # back: the table is created and the backlog written
        wait_for(lambda: len(audited(url)) == 3, "the backlog written")
        wait_for(lambda: metric(scraped(service.url), "patientinsight_audit_backlog") == 0, "an empty backlog")
        assert "audit database reachable again" in service.log()

        proxy.stop()  # away again, with the pool's connections cut mid-life
        failures = metric(scraped(service.url), "patientinsight_audit_write_failures_total")
        ask(4)
        wait_for(
            lambda: metric(scraped(service.url), "patientinsight_audit_write_failures_total") > failures,
            "another failure",
        )
        proxy.start()
        rows = wait_for(lambda: (r := audited(url)) and len(r) == 7 and r, "all 7 rows")
        text = scraped(service.url)
    assert metric(text, "patientinsight_audit_records_written_total") == 7
    assert metric(text, "patientinsight_audit_records_dropped_total") == 0
    assert [row["text_length"] for row in rows] == [len(f"fever and cough, case {i}") for i in (0, 1, 2, 0, 1, 2, 3)]
    assert "fever" not in service.log()


def test_a_full_backlog_counts_what_it_drops(database: str, proxy: TcpProxy) -> None:
    """In-process, against the same PostgreSQL: rows beyond the backlog are dropped and counted, and so
    are rows still waiting when the log closes with the database away."""
    metrics = Metrics()
    audit = AuditLog(audit_url(database, proxy.port), metrics, backlog_max=5, retry_s=0.05, retry_max_s=0.2)

    def record(n: int) -> None:
        for i in range(n):
            audit.record("clinic-a", "v1", 3, 10 + i, "0123456789abcdef", ["u1", "u2"], "extractive", None)

    def value(name: str) -> float:
        return float(metrics.registry.get_sample_value(name) or 0.0)

    try:
        record(8)  # the database is away: 5 wait, 3 are dropped
        assert audit.backlog() == 5 and value("patientinsight_audit_records_dropped_total") == 3
        wait_for(lambda: value("patientinsight_audit_write_failures_total") >= 1, "a failed attempt", 10)
        proxy.start()
        wait_for(lambda: audit.backlog() == 0, "the backlog written", 20)
        assert [row["text_length"] for row in read_audit(audit_url(database))] == [10, 11, 12, 13, 14]
        assert value("patientinsight_audit_records_written_total") == 5
        proxy.stop()
        record(2)
    finally:
        audit.close(timeout_s=15)
    assert value("patientinsight_audit_records_dropped_total") == 5  # the 2 left waiting at close
    assert value("patientinsight_audit_backlog") == 0
