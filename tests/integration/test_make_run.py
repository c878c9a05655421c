"""`make run` as a new user runs it, on free ports and homes of its own: the MLflow UI answers on the
project's store and each task's MLflow link leads to a real run, patient_ingest is active (a run
triggered through the REST API, as the S3 trigger triggers, starts without a click), and Ctrl-C (SIGINT
to make's process group) stops everything it started within seconds, leaving no process behind.

The stack's supervisor (scripts/run_stack.py) is also tested alone on stubborn stand-in processes:
ones that ignore SIGINT and SIGTERM, and a child that left for a session of its own."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

from tests.http_server import free_port

MARKER = "PATIENTINSIGHT_TEST_STACK"  # inherited by every process `make run` starts, and theirs
STOP_WITHIN_S = 20  # the supervisor's grace (5 s) and then SIGKILL; "a few seconds", with room for a busy machine


# ------------------------------------------------------------------------------------------- helpers
def marked(marker: str) -> list[psutil.Process]:
    """Every live process (zombies are not) that carries the marker in its environment."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(MARKER) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
    return out


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def load_run_stack(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_stack", repo_root / "scripts" / "run_stack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_stack"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------- the supervisor, stand-ins
STUBBORN = """
import os, signal, subprocess, sys, time
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
# A child in a session of its own, as a task process may be: not in this group, still ours to stop.
subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"], start_new_session=True)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_supervisor_leaves_nothing_behind(repo_root: Path, tmp_path: Path, sig: signal.Signals) -> None:
    run_stack = load_run_stack(repo_root)
    marker = uuid.uuid4().hex
    env = {MARKER: marker}
    stack = run_stack.Stack(
        [
            run_stack.Component("obedient", [sys.executable, "-c", "import time; time.sleep(600)"], env=env),
            run_stack.Component("stubborn", [sys.executable, "-c", STUBBORN], env=env),
        ],
        tmp_path / "logs",
        grace_s=1.0,
    )
    stack.start()
    try:
        deadline = time.monotonic() + 30
        while len(marked(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(marked(marker)) == 3, describe(marked(marker))
        stack.on_signal(sig, None)
        assert stack.exited() == sig.name
        started = time.monotonic()
        killed = stack.stop(sig)
        assert time.monotonic() - started < 10
        assert killed == ["stubborn", "stubborn"]  # it and its child; the obedient one stopped on the signal
        assert marked(marker) == []
    finally:
        for proc in marked(marker):
            proc.kill()


def test_the_supervisor_stops_the_stack_when_a_component_exits(repo_root: Path, tmp_path: Path) -> None:
    run_stack = load_run_stack(repo_root)
    marker = uuid.uuid4().hex
    stack = run_stack.Stack(
        [
            run_stack.Component("crash", [sys.executable, "-c", "raise SystemExit(3)"], env={MARKER: marker}),
            run_stack.Component("other", [sys.executable, "-c", "import time; time.sleep(600)"], env={MARKER: marker}),
        ],
        tmp_path / "logs",
    )
    stack.start()
    try:
        assert stack.wait_ready(5) == []
        assert stack.watch().startswith("crash exited with 3")
        stack.stop()
        assert marked(marker) == []
    finally:
        for proc in marked(marker):
            proc.kill()


# ------------------------------------------------------------------------------------ `make run`
class MakeRun:
    def __init__(self, repo_root: Path, workdir: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.ports = {"AIRFLOW_PORT": free_port(), "SERVE_PORT": free_port(), "MLFLOW_PORT": free_port()}
        self.airflow_home = workdir / "airflow"
        self.output = workdir / "make-run.log"
        venv = Path(sys.prefix)
        # A new user's shell: nothing of this test session's Airflow or PatientInsight settings, but its model
        # cache (tests/conftest.py), so that the model is exported and converted once per session, not here.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PATIENTINSIGHT_"))}
        if "PATIENTINSIGHT_MODEL_CACHE_DIR" in os.environ:
            env["PATIENTINSIGHT_MODEL_CACHE_DIR"] = os.environ["PATIENTINSIGHT_MODEL_CACHE_DIR"]
        env.update(
            {
                "AIRFLOW_HOME": str(self.airflow_home),
                "PATIENTINSIGHT_HOME": str(workdir / "home"),
                "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                MARKER: self.marker,
            }
        )
        # -o: the venv is this test session's own; never reinstall it, whatever the timestamps say.
        argv = ["make", "--no-print-directory", f"VENV={venv}", "-o", str(venv / ".installed"), "run"]
        argv += [f"{name}={port}" for name, port in self.ports.items()]
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=repo_root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group, as a terminal's foreground job is: Ctrl-C signals it
            )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_up(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "Press Ctrl-C to stop." in self.text():
                return self.text()
            if self.process.poll() is not None:
                raise AssertionError(f"make run exited with {self.process.returncode}:\n{self.text()[-6000:]}")
            time.sleep(2)
        raise TimeoutError(f"make run not up after {timeout_s:.0f} s:\n{self.text()[-6000:]}")

    def token(self) -> str:
        password = json.loads((self.airflow_home / "passwords.json").read_text())["admin"]
        status, body = http(
            "POST", self.url("AIRFLOW_PORT") + "/auth/token", {"username": "admin", "password": password}
        )
        assert status in (200, 201), (status, body)
        return str(body["access_token"])

    def airflow(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = http(method, self.url("AIRFLOW_PORT") + path, body, self.token())
        assert status < 300, (method, path, status, answer)
        return answer

    def logs(self) -> str:
        parts = [f"--- make run\n{self.text()[-4000:]}"]
        for path in sorted(self.airflow_home.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-25:]
            parts.append(f"--- {path.name}\n" + "\n".join(line[:400] for line in lines))
        return "\n".join(parts)

    def kill_leftovers(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for proc in marked(self.marker):
            with contextlib.suppress(psutil.Error):
                proc.kill()


@pytest.fixture(scope="module")
def make_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    run = MakeRun(repo_root, tmp_path_factory.mktemp("make-run"))
    try:
        run.wait_up(timeout_s=600)
        yield run
    except BaseException:
        sys.__stderr__.write(run.logs() + "\n")  # type: ignore[union-attr]
        raise
    finally:
        run.kill_leftovers()


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_make_run_prints_every_address(make_run: MakeRun) -> None:
    out = make_run.text()
    assert f"Airflow UI:    {make_run.url('AIRFLOW_PORT')}   login: admin / " in out
    assert f"Query service: {make_run.url('SERVE_PORT')}" in out
    assert f"MLflow UI:     {make_run.url('MLFLOW_PORT')}" in out


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_mlflow_link_of_the_ingest_leads_to_its_run(make_run: MakeRun) -> None:
    mlflow = make_run.url("MLFLOW_PORT")
    assert http("GET", f"{mlflow}/health")[0] == 200
    runs = make_run.airflow("GET", "/api/v2/dags/patient_ingest/dagRuns")["dag_runs"]
    assert runs, "make run ingests the sample through the DAG"
    entry = make_run.airflow(
        "GET",
        f"/api/v2/dags/patient_ingest/dagRuns/{runs[0]['dag_run_id']}/taskInstances/begin/xcomEntries/mlflow_run_url",
    )
    link = str(entry["value"]).strip("\"'")
    match = re.fullmatch(re.escape(mlflow) + r"/#/runs/([0-9a-f]{32})", link)
    assert match, link
    status, found = http("GET", f"{mlflow}/api/2.0/mlflow/runs/get?run_id={match.group(1)}")
    assert status == 200, found
    tags = {t["key"]: t["value"] for t in found["run"]["data"]["tags"]}
    assert tags["airflow.dag_id"] == "patient_ingest" and found["run"]["info"]["status"] == "FINISHED"
    assert http("GET", f"{mlflow}/")[0] == 200  # the page the link opens


@pytest.mark.integration
@pytest.mark.ends_module  # Ctrl-C stops the module's stack: after the other tests of make_run
@pytest.mark.timeout(900)
def test_a_rest_triggered_run_starts_without_a_click_and_ctrl_c_stops_everything(make_run: MakeRun) -> None:
    listed = make_run.airflow("GET", "/api/v2/dags?limit=100")["dags"]
    assert "patient_ingest" in {d["dag_id"] for d in listed}
    assert {d["dag_id"] for d in listed if d["description"]} == {d["dag_id"] for d in listed}  # the list's one line
    assert make_run.airflow("GET", "/api/v2/dags/patient_ingest")["is_paused"] is False
    # As the S3 trigger does it: POST dagRuns with a conf. It must leave `queued` by itself.
    sample = next((Path(make_run.airflow_home).parent / "home").rglob("*.csv"))
    run = make_run.airflow(
        "POST", "/api/v2/dags/patient_ingest/dagRuns", {"logical_date": None, "conf": {"source_uri": str(sample)}}
    )
    path = f"/api/v2/dags/patient_ingest/dagRuns/{run['dag_run_id']}"
    deadline = time.monotonic() + 120
    while make_run.airflow("GET", path)["state"] == "queued" and time.monotonic() < deadline:
        time.sleep(2)
    assert make_run.airflow("GET", path)["state"] != "queued", make_run.logs()
    # Stop while a task runs: the LocalExecutor's workers are busy, the case that used to hang.
    while time.monotonic() < deadline:
        tasks = make_run.airflow("GET", f"{path}/taskInstances")["task_instances"]
        if any(t["state"] == "running" for t in tasks):
            break
        time.sleep(1)

    before = marked(make_run.marker)
    assert len(before) >= 7, describe(before)  # make, the supervisor, four Airflow components, serving, MLflow
    started = time.monotonic()
    os.killpg(make_run.process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    try:
        make_run.process.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"make run still running {STOP_WITHIN_S} s after SIGINT:\n" + "\n".join(describe(marked(make_run.marker)))
        )
    took = time.monotonic() - started
    deadline = time.monotonic() + 5  # the last ones, killed, being reaped
    while marked(make_run.marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert describe(marked(make_run.marker)) == [], f"left behind {took:.1f} s after SIGINT"
    assert [name for name, port in make_run.ports.items() if listening(port)] == []
    assert "stopped in" in make_run.text(), make_run.text()[-2000:]
