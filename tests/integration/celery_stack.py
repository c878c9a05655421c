"""A real Airflow 3 on the CeleryExecutor for integration tests and the celery benchmark: AirflowStack
(api-server, scheduler, dag-processor) plus the triggerer, PostgreSQL as the metadata database and the
Celery result backend, Redis as the broker, and `airflow celery worker` processes started one by one,
each with its own Celery hostname, task-instance hostname and concurrency 1.

    reason = engine_unavailable()          # None, or why Redis / PostgreSQL cannot be used here
    stack = CeleryStack.start_celery(repo_root, workdir)
    try:
        stack.start_worker("worker-a"); stack.start_worker("worker-b"); stack.wait_workers()
    finally:
        stack.stop()                       # every process group, the database, the Redis keys

The engine's addresses come from the environment: PATIENTINSIGHT_TEST_REDIS (the broker, default
redis://127.0.0.1:6379/0) and PATIENTINSIGHT_TEST_POSTGRES (read by airflow_stack). Each stack has its
own PostgreSQL database, its own Redis key prefix and its own Celery queue, so runs never collide.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.airflow_stack import (
    COMPONENTS,
    PG_URL,
    AirflowStack,
    _postgres_usable,
    _signal_group,
)

log = logging.getLogger(__name__)

REDIS_URL = os.environ.get("PATIENTINSIGHT_TEST_REDIS", "redis://127.0.0.1:6379/0")
SERVICES = (*COMPONENTS, "triggerer")
HOSTNAME_VARIABLE = "PATIENTINSIGHT_TEST_WORKER_HOSTNAME"

# A task whose worker vanished stops heartbeating; the scheduler fails that try after this many seconds
# (Airflow's default is 300) and the task's retries run it again on a live worker.
HEARTBEAT_TIMEOUT_S = 30


def worker_hostname() -> str:
    """The workers' `[core] hostname_callable`: the name a task instance records as its hostname (two
    workers on one machine would otherwise both report the machine's FQDN)."""
    return os.environ[HOSTNAME_VARIABLE]


def engine_unavailable() -> str | None:
    """Why the Celery stack cannot run here, or None: it needs a Redis and a PostgreSQL that answer."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis broker at {REDIS_URL} (PATIENTINSIGHT_TEST_REDIS) not reachable: {exc}"
    if os.environ.get("PATIENTINSIGHT_TEST_DB") == "sqlite":
        return "PATIENTINSIGHT_TEST_DB=sqlite: the CeleryExecutor needs PostgreSQL"
    if not _postgres_usable():
        return f"PostgreSQL at {PG_URL} (PATIENTINSIGHT_TEST_POSTGRES) not reachable, or psycopg2/asyncpg missing"
    return None


def celery_environment(prefix: str) -> dict[str, str]:
    """The AIRFLOW__* settings of the CeleryExecutor, as the Helm chart's `config:` would give them."""
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": REDIS_URL,
        # No result_backend: Airflow's default is the metadata database (db+postgresql+psycopg2://...).
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": f"{prefix}:",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": prefix,
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }


@dataclass
class CeleryStack(AirflowStack):
    prefix: str = ""
    workers: list[str] = field(default_factory=list)  # running now
    started: list[str] = field(default_factory=list)  # ever, for the logs

    @classmethod
    def start_celery(
        cls, repo_root: Path, workdir: Path, extra_env: dict[str, str] | None = None, timeout_s: float = 240
    ) -> CeleryStack:
        reason = engine_unavailable()
        if reason:
            raise RuntimeError(reason)
        prefix = f"patientinsight-it-{secrets.token_hex(4)}"
        env = {**celery_environment(prefix), **(extra_env or {})}
        stack = cls.start(repo_root, workdir, env, timeout_s, components=SERVICES)
        stack.prefix = prefix
        if stack.database.kind != "postgresql":  # engine_unavailable said yes: only a race gets here
            stack.stop()
            raise RuntimeError("the Celery stack needs PostgreSQL; got SQLite")
        return stack

    @property
    def queue(self) -> str:
        return self.env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]

    # ------------------------------------------------------------------------------------ workers
    def start_worker(self, name: str, threads: int = 1) -> None:
        """`airflow celery worker` named `name` (Celery hostname and task-instance hostname), concurrency 1,
        its encoder on `threads` threads; its own pid file, no log server (the logs are on a shared disk)."""
        env = {
            **self.env,
            HOSTNAME_VARIABLE: name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            "PYTHONPATH": os.pathsep.join(p for p in (str(self.repo_root), os.environ.get("PYTHONPATH")) if p),
            "PATIENTINSIGHT_EMBED_THREADS": str(threads),
        }
        argv = ["celery", "worker", "--celery-hostname", name, "--concurrency", "1", "--queues", self.queue]
        argv += ["--pid", str(self.airflow_home / f"{name}.pid"), "--skip-serve-logs"]
        self.start_component(name, argv, env)
        self.workers.append(name)
        if name not in self.started:
            self.started.append(name)

    def wait_workers(self, timeout_s: float = 120) -> None:
        """Until every started worker has connected to the broker and logged `ready`."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.workers)
        while waiting and time.monotonic() < deadline:
            self._check_alive()
            waiting = [w for w in waiting if f"@{w} ready" not in self.log_path(w).read_text(errors="replace")]
            time.sleep(1)
        if waiting:
            raise TimeoutError(f"workers {waiting} not ready after {timeout_s:.0f} s:\n{self.tail(waiting[0])}")

    def stop_worker(self, name: str) -> None:
        """A warm shutdown (SIGTERM): the worker finishes its task first."""
        self.stop_component(name, grace_s=60)
        self.workers.remove(name)

    def kill_worker(self, name: str) -> None:
        """SIGKILL to the worker's whole process group (the worker, its pool child, the task's
        supervisor and task process): a machine that vanished, with no chance to report anything."""
        process = self.processes.pop(name)
        _signal_group(process, signal.SIGKILL)
        process.wait(10)
        self.workers.remove(name)
        log.info("killed worker %s (process group %d)", name, process.pid)

    def stop(self) -> None:
        super().stop()
        if self.prefix:
            self._delete_redis_keys()

    def _delete_redis_keys(self) -> None:
        import redis

        try:
            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
            keys = list(client.scan_iter(match=f"*{self.prefix}*", count=500))
            if keys:
                client.delete(*keys)
        except redis.RedisError:
            log.exception("could not delete the Redis keys of prefix %s", self.prefix)

    # -------------------------------------------------------------------------------- diagnostics
    def _own_logs(self) -> list[str]:
        return ["triggerer", *self.started]

    def run_diagnostics(self, dag_id: str, run_id: str) -> str:
        return super().run_diagnostics(dag_id, run_id) + "\n" + "\n".join(self.tail(n, 30) for n in self._own_logs())

    def dump_logs(self) -> None:
        super().dump_logs()
        for name in self._own_logs():
            if self.log_path(name).exists():
                sys.__stderr__.write(self.tail(name, 120) + "\n")  # type: ignore[union-attr]

    # ------------------------------------------------------------------------------ task instances
    def embed_tasks(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The mapped `embed` task instances of the run; none before `shards` has expanded them."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/embed/listMapped"
        status, body = self.request("GET", path)
        if status == 404:
            return []
        assert status == 200, (status, body)
        return list(body["task_instances"])

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        return list(self.api("GET", path)["task_instances"])
