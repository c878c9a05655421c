"""A real Airflow 3 for integration tests: `airflow db migrate`, then api-server, scheduler and
dag-processor as subprocesses on a free port of 127.0.0.1, configured as the project configures
Airflow (the AIRFLOW__* variables the Makefile exports, the repo's dags/ and plugins/), on PostgreSQL
when one is reachable (a fresh database, dropped at the end) and SQLite otherwise.

    stack = AirflowStack.start(repo_root, workdir, extra_env={...})
    try:
        stack.api("GET", "/api/v2/dags/patient_ingest")
    finally:
        stack.stop()

Every process is started in its own process group and stopped with it (children included).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tests.http_server import free_port

log = logging.getLogger(__name__)

COMPONENTS = ("api-server", "scheduler", "dag-processor")
PG_URL = os.environ.get("PATIENTINSIGHT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
USERNAME = "admin"


def makefile_airflow_env(repo_root: Path, airflow_home: Path) -> dict[str, str]:
    """The AIRFLOW__* variables the Makefile exports: the project's own Airflow configuration."""
    env: dict[str, str] = {}
    pattern = re.compile(r"^export\s+(AIRFLOW__\w+)\s*:?=\s*(.*)$")
    for line in (repo_root / "Makefile").read_text().splitlines():
        match = pattern.match(line.strip())
        if match:
            value = match.group(2).strip()
            value = value.replace("$(CURDIR)", str(repo_root)).replace("$(AIRFLOW_HOME)", str(airflow_home))
            env[match.group(1)] = value
    if not env:
        raise RuntimeError(f"no AIRFLOW__* exports found in {repo_root / 'Makefile'}")
    return env


# ------------------------------------------------------------------------------------------ database
def _postgres_usable() -> bool:
    """A PostgreSQL that answers, and the drivers Airflow needs for it (sync and async)."""
    try:
        import asyncpg  # noqa: F401
        import psycopg2
    except ImportError:
        log.info("PostgreSQL drivers (psycopg2, asyncpg) not installed: using SQLite")
        return False
    try:
        psycopg2.connect(f"{PG_URL}/postgres", connect_timeout=3).close()
    except psycopg2.Error as exc:
        log.info("PostgreSQL at %s not reachable (%s): using SQLite", PG_URL, exc)
        return False
    return True


def _pg_admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG_URL}/postgres", connect_timeout=5)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


class ProgressDeadline:
    """A deadline that moves while the work does: it passes only after `stall_s` with nothing new seen.
    Integration tests wait on it instead of a fixed wall-clock time (a worker at load average 14 is slow,
    not wrong)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._last: object = None
        self._moved_at = time.monotonic()

    def saw(self, progress: object) -> None:
        if progress != self._last:
            self._last, self._moved_at = progress, time.monotonic()

    def stalled(self) -> bool:
        return time.monotonic() - self._moved_at > self.stall_s


@dataclass
class Database:
    url: str
    kind: str
    name: str | None = None

    @classmethod
    def create(cls, airflow_home: Path) -> Database:
        if os.environ.get("PATIENTINSIGHT_TEST_DB", "auto") != "sqlite" and _postgres_usable():
            name = f"patientinsight_it_{secrets.token_hex(4)}"
            _pg_admin(f'CREATE DATABASE "{name}"')
            rest = PG_URL.split("://", 1)[1]
            return cls(f"postgresql+psycopg2://{rest}/{name}", "postgresql", name)
        return cls(f"sqlite:///{airflow_home / 'airflow.db'}", "sqlite")

    def drop(self) -> None:
        if self.name:
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# --------------------------------------------------------------------------------------------- stack
@dataclass
class AirflowStack:
    repo_root: Path
    workdir: Path
    env: dict[str, str]
    base_url: str
    password: str
    database: Database
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    username: str = USERNAME

    @property
    def airflow_home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    @property
    def patientinsight_home(self) -> Path:
        return Path(self.env["PATIENTINSIGHT_HOME"])

    @classmethod
    def start(
        cls,
        repo_root: Path,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        timeout_s: float = 240,
        components: tuple[str, ...] = COMPONENTS,
    ) -> Self:
        airflow_home = workdir / "airflow"
        airflow_home.mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        port = free_port()
        password = secrets.token_urlsafe(12)
        passwords_file = airflow_home / "passwords.json"
        passwords_file.write_text(json.dumps({USERNAME: password}))
        database = Database.create(airflow_home)
        env = cls._environment(repo_root, workdir, airflow_home, port, database, extra_env or {})
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords_file)
        stack = cls(repo_root, workdir, env, f"http://127.0.0.1:{port}", password, database)
        try:
            stack._migrate()
            for name in components:
                stack.start_component(name)
            stack.wait_healthy(timeout_s)
        except BaseException:
            stack.dump_logs()
            stack.stop()
            raise
        return stack

    @staticmethod
    def _environment(
        repo_root: Path, workdir: Path, airflow_home: Path, port: int, database: Database, extra: dict[str, str]
    ) -> dict[str, str]:
        from cryptography.fernet import Fernet

        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env.update(makefile_airflow_env(repo_root, airflow_home))
        env.update(
            {
                "AIRFLOW_HOME": str(airflow_home),
                "PATIENTINSIGHT_HOME": str(workdir / "home"),
                "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
                # This stack's own port, database and secrets; everything else as the project has it.
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database.url,
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # shared by all components
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def _airflow(self) -> str:
        return str(Path(sys.executable).with_name("airflow"))

    def _migrate(self) -> None:
        result = subprocess.run(
            [self._airflow(), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=300
        )
        (self.workdir / "logs" / "db-migrate.log").write_text(result.stdout + result.stderr)
        if result.returncode:
            raise RuntimeError(f"airflow db migrate failed ({result.returncode}):\n{result.stderr[-4000:]}")
        # The connections and pools of airflow_settings.yaml, loaded as `make airflow-home` loads them
        # (connections from the environment, AIRFLOW_CONN_*, still come first).
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "patientinsight.airflow.astro_settings",
                str(self.repo_root / "airflow_settings.yaml"),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        (self.workdir / "logs" / "airflow-settings.log").write_text(result.stdout + result.stderr)
        if result.returncode:
            raise RuntimeError(f"loading airflow_settings.yaml failed ({result.returncode}):\n{result.stderr[-4000:]}")

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def start_component(self, name: str, argv: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`airflow <name>` (or `airflow <argv>`, logged as `name`) with the stack's environment (or `env`)."""
        with self.log_path(name).open("ab") as out:
            self.processes[name] = subprocess.Popen(
                [self._airflow(), *(argv or [name])],
                env=env or self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped with all its children
            )

    def stop_component(self, name: str, grace_s: float = 20) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s: killing its process group", name, grace_s)
        _signal_group(process, signal.SIGKILL)  # leftovers of the group (task processes, workers)
        process.wait(10)

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop_component(name)
        try:
            self.database.drop()
        except Exception:  # a left-over test database must not hide the test's own result
            log.exception("could not drop the test database %s", self.database.name)

    # ------------------------------------------------------------------------------------- REST API
    def wait_healthy(self, timeout_s: float) -> None:
        """Until the API server answers and the scheduler and dag-processor report healthy."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, last = self.request("GET", "/api/v2/monitor/health", token=None)
                parts = last if isinstance(last, dict) else {}
                if status == 200 and all(
                    (parts.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler")
                ):
                    return
            except OSError as exc:
                last = exc
            time.sleep(1)
        raise TimeoutError(f"Airflow at {self.base_url} not healthy after {timeout_s:.0f} s; last answer: {last}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {process.returncode}:\n{self.tail(name)}")

    def token(self) -> str:
        status, body = self.request(
            "POST", "/auth/token", {"username": self.username, "password": self.password}, token=None
        )
        assert status in (200, 201), (status, body)
        return str(body["access_token"])

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = "auto", timeout_s: float = 30
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token == "auto":
            token = self.token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        if status >= 300:
            raise AssertionError(f"{method} {path}: HTTP {status}: {answer}")
        return answer

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> dict[str, Any]:
        """Until the dag-processor has parsed the DAG; then unpause it (DAGs start paused)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            status, _ = self.request("GET", f"/api/v2/dags/{dag_id}")
            if status == 200:
                return dict(self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}))
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout_s:.0f} s:\n{self.tail('dag-processor')}")

    def task_progress(self, dag_id: str, run_id: str) -> tuple[tuple[str, int, str, int], ...]:
        """What the run's tasks have done so far: (task, map index, state, try) for each task instance."""
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return tuple(
            sorted((t["task_id"], t["map_index"], str(t["state"]), t["try_number"]) for t in answer["task_instances"])
        )

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600) -> dict[str, Any]:
        """Until the run is finished, for as long as its tasks keep moving: `timeout_s` is the longest wait
        with no task instance changing state or try, so a loaded machine that runs a correct run slowly
        does not fail it. Task states and logs go into the message when it did not succeed."""
        progress = ProgressDeadline(timeout_s)
        run: dict[str, Any] = {}
        while not progress.stalled():
            self._check_alive()
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                break
            progress.saw(self.task_progress(dag_id, run_id))
            time.sleep(3)
        if run.get("state") != "success":
            raise AssertionError(
                f"run {run_id} is {run.get('state')!r}, not success"
                f"{f' (no task moved for {timeout_s:.0f} s)' if progress.stalled() else ''}:\n"
                f"{self.run_diagnostics(dag_id, run_id)}"
            )
        return run

    def run_diagnostics(self, dag_id: str, run_id: str) -> str:
        lines, failed = [], set()
        try:
            tasks = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
            for t in tasks["task_instances"]:
                lines.append(f"  {t['task_id']}: {t['state']} (try {t['try_number']})")
                if t["state"] in ("failed", "up_for_retry"):
                    failed.add(t["task_id"])
        except (AssertionError, OSError) as exc:
            lines.append(f"  task instances unavailable: {exc}")
        for task_id in sorted(failed):
            for task_log in sorted(
                (self.airflow_home / "logs").glob(f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/*")
            ):
                lines.append(f"--- {task_log.relative_to(self.airflow_home)}\n{_tail_file(task_log, 15)}")
        return "\n".join(lines) + "\n" + "\n".join(self.tail(c, 30) for c in COMPONENTS)

    def tail(self, name: str, lines: int = 60) -> str:
        return f"--- airflow {name} (last {lines} lines)\n{_tail_file(self.log_path(name), lines)}"

    def dump_logs(self) -> None:
        """The components' logs, to the real stderr (pytest's capture would hide them in a fixture)."""
        for name in ("db-migrate", *COMPONENTS):
            if self.log_path(name).exists():
                sys.__stderr__.write(self.tail(name, 120) + "\n")  # type: ignore[union-attr]

    def copy_logs(self, target: Path) -> None:
        shutil.copytree(self.workdir / "logs", target, dirs_exist_ok=True)


@contextlib.contextmanager
def running_stack(
    repo_root: Path, workdir: Path, request: Any, dag_id: str, extra_env: dict[str, str] | None = None
) -> Iterator[AirflowStack]:
    """A started stack with `dag_id` parsed and unpaused, for a fixture; the components' logs go to
    stderr when a test of the fixture's scope failed, and every process is stopped at the end."""
    stack = AirflowStack.start(repo_root, workdir, extra_env)
    failed_before = request.session.testsfailed
    try:
        stack.wait_for_dag(dag_id)
        yield stack
    finally:
        if request.session.testsfailed > failed_before:
            stack.dump_logs()
        stack.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # start_new_session made pid the group id


def _tail_file(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(line[:600] for line in path.read_text(errors="replace").splitlines()[-lines:])
