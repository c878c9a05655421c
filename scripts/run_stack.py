"""Keep `make run`'s stack up, and take all of it down on Ctrl-C.

Starts the Airflow api-server, scheduler, dag-processor and triggerer, the query service and the MLflow
UI, each in a session of its own (its own process group: a component's workers and task processes stay
with it), waits until their addresses answer and prints them. On SIGINT or SIGTERM, or when a component
exits, it sends the signal (SIGTERM for an exit) to every group, and to any process of theirs that left its
group, waits up to --grace seconds, then SIGKILLs whatever is left; a second Ctrl-C kills at once. Logs:
LOGS/<name>.log.

The addresses come from the same settings the DAGs use: Airflow's AIRFLOW__API__BASE_URL, and
PATIENTINSIGHT_SERVE_HOST/PORT and PATIENTINSIGHT_MLFLOW_UI_URL (where each task's "MLflow run" link
points). The MLflow UI reads the project's store (settings.tracking_uri); with a tracking server, or links
to another machine, configured instead, none is started here.

    python scripts/run_stack.py --logs .airflow      # what `make run` does once the sample is ingested
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import psutil

log = logging.getLogger("run_stack")


@dataclass
class Component:
    name: str
    argv: list[str]
    ready_url: str | None = None  # answers 2xx once the component serves
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    components: list[Component]
    logs: Path
    grace_s: float = 5.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stop_signal: int | None = None  # the first SIGINT/SIGTERM received
    hurry: bool = False  # a second one: kill at once

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        else:
            self.hurry = True

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for component in self.components:
            with (self.logs / f"{component.name}.log").open("ab") as out:
                self.processes[component.name] = subprocess.Popen(
                    component.argv,
                    env={**os.environ, **component.env},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: stopped with everything it starts
                )

    def exited(self) -> str | None:
        """Why the stack must stop now: a signal, or a component that exited."""
        if self.stop_signal is not None:
            return signal.Signals(self.stop_signal).name
        for name, process in self.processes.items():
            if process.poll() is not None:
                return f"{name} exited with {process.returncode} (see {self.logs / name}.log)"
        return None

    def wait_ready(self, timeout_s: float) -> list[str]:
        """Until every address answers, the stack must stop, or the time is up: the names not ready."""
        waiting = [c for c in self.components if c.ready_url]
        deadline = time.monotonic() + timeout_s
        while waiting and time.monotonic() < deadline and self.exited() is None:
            waiting = [c for c in waiting if not _answers(c.ready_url)]
            if waiting:
                time.sleep(1)
        return [c.name for c in waiting]

    def watch(self) -> str:
        while (reason := self.exited()) is None:
            time.sleep(0.5)
        return reason

    def stop(self, sig: int = signal.SIGTERM) -> list[str]:
        """Signal every group (as Ctrl-C signals a terminal's), and each process that left its group, wait
        up to grace_s, then SIGKILL whatever is left. Returns the components whose processes were killed."""
        tree = self._tree()
        groups = {process.pid for process in self.processes.values()}  # start_new_session: pid = group id
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        for pid, (_, proc) in tree.items():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(pid) not in groups:  # e.g. a task process in a session of its own
                    proc.send_signal(sig)
        deadline = time.monotonic() + self.grace_s
        alive = list(tree)
        while alive and time.monotonic() < deadline and not self.hurry:
            time.sleep(0.2)
            alive = [pid for pid in alive if _running(tree[pid][1])]
        left = {pid: tree[pid] for pid in alive} | self._tree()  # and what they started meanwhile
        killed = []
        for name, proc in left.values():
            if _running(proc):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    killed.append(name)
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
                process.wait(5)
        psutil.wait_procs([proc for _, proc in left.values() if _running(proc)], timeout=5)
        return killed

    def _tree(self) -> dict[int, tuple[str, psutil.Process]]:
        """Every live process of the stack, by pid: its component's name and the process."""
        procs: dict[int, tuple[str, psutil.Process]] = {}
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                top = psutil.Process(process.pid)
                for proc in [top, *top.children(recursive=True)]:
                    if _running(proc):
                        procs[proc.pid] = (name, proc)
        return procs


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _answers(url: str | None) -> bool:
    try:
        with urllib.request.urlopen(url or "", timeout=3) as response:
            return bool(200 <= response.status < 300)
    except (OSError, ValueError):  # refused, timed out, 5xx (HTTPError), not yet bound
        return False


def _bin(name: str) -> str:
    """The venv's own command (the one this interpreter belongs to), else whatever PATH has."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def project_components() -> list[Component]:
    from patientinsight.settings import get_settings
    from patientinsight.tracking import artifact_location

    settings = get_settings()
    airflow_url = os.environ.get("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080").rstrip("/")
    serve_url = f"http://{settings.serve_host}:{settings.serve_port}"
    components = [
        Component("api-server", [_bin("airflow"), "api-server"], f"{airflow_url}/api/v2/monitor/health"),
        *(Component(name, [_bin("airflow"), name]) for name in ("scheduler", "dag-processor", "triggerer")),
        Component(
            "serving",
            [_bin("patientinsight"), "serve", "--host", settings.serve_host, "--port", str(settings.serve_port)],
            f"{serve_url}/readyz",
            {"PATIENTINSIGHT_DEV_MODE": "true"},
        ),
    ]
    store, ui = settings.tracking_uri, urlsplit(settings.mlflow_ui_url)
    if not store.startswith("sqlite:///") or ui.hostname not in ("127.0.0.1", "localhost"):
        log.info("MLflow: store %s, UI at %s: not started here", store, settings.mlflow_ui_url)
    else:  # the project's own store, and the links point to this machine: the UI is ours to start
        argv = [_bin("mlflow"), "ui", "--backend-store-uri", store, "--host", ui.hostname or "127.0.0.1"]
        argv += ["--port", str(ui.port or 5000), "--workers", "1"]
        artifacts = artifact_location(store)
        if artifacts:
            argv += ["--default-artifact-root", artifacts]
        # No job runner: it starts seven huey consumers for GenAI jobs that browsing runs does not need.
        no_jobs = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        components.append(Component("mlflow", argv, f"{settings.mlflow_ui_url.rstrip('/')}/health", no_jobs))
    return components


def addresses() -> str:
    from patientinsight.settings import get_settings

    settings = get_settings()
    airflow_url = os.environ.get("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080").rstrip("/")
    login = ""
    passwords = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    if passwords and Path(passwords).exists():
        login = f"   login: admin / {json.loads(Path(passwords).read_text()).get('admin', '?')}"
    serve_url = f"http://{settings.serve_host}:{settings.serve_port}"
    return (
        f"\nAirflow UI:    {airflow_url}{login}\n"
        f"Query service: {serve_url}   (page at /, API docs at /docs; dev mode: no API key on loopback)\n"
        f"MLflow UI:     {settings.mlflow_ui_url.rstrip('/')}   (one run per DAG run: each task's MLflow run link)\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=Path, required=True, help="folder of the components' logs")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to stop before SIGKILL (default 5)")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for the addresses")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    stack = Stack(project_components(), args.logs, args.grace)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stack.on_signal)
    stack.start()
    slow = stack.wait_ready(args.ready_timeout)
    if stack.exited() is None:
        for name in slow:
            log.warning("%s does not answer yet; its log: %s", name, args.logs / f"{name}.log")
        sys.stdout.write(addresses() + f"Logs in {args.logs}/*.log. Press Ctrl-C to stop.\n")
        sys.stdout.flush()
    reason = stack.watch()
    log.info("stopping (%s) ...", reason)
    started = time.monotonic()
    killed = stack.stop(stack.stop_signal or signal.SIGTERM)
    took = time.monotonic() - started
    if killed:
        counts = ", ".join(f"{name} {killed.count(name)}" for name in dict.fromkeys(killed))
        log.info("stopped in %.1f s; killed after %.0f s, processes of: %s", took, stack.grace_s, counts)
    else:
        log.info("stopped in %.1f s", took)
    if stack.stop_signal is not None:  # die of the signal, so that make and the shell see an interrupt
        signal.signal(stack.stop_signal, signal.SIG_DFL)
        os.kill(os.getpid(), stack.stop_signal)
    return 1  # a component exited on its own


if __name__ == "__main__":
    sys.exit(main())
