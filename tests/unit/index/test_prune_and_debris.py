"""Pruning keeps exactly `keep_versions` versions (never the published one or a live build's base; held
versions are kept beside them until their hold ends), and the working folders of a build that died
(`versions/.staging-*`, `.build-*`) and a publish's temp file are removed by the next one, while those
of live builds, in this process or another, stay."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.holds import HELD_DIR, HOLD_S
from patientinsight.index.versions import DEBRIS_GRACE_S, OWNER_FILE, read_owner
from tests.helpers import one_record_version

# A build in a process of its own that stops inside its commit (where the lexical index is built) and
# says where it is: its staging folder, and its spill folder of upserts.
HANGING_BUILD = """
import json, sys, time
import numpy as np, pandas as pd
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.types import META_COLUMNS, EmbeddedBatch

index = EmbeddedIndex(sys.argv[1])
builder = index.builder(index.published(), {"dim": 3})
frame = pd.DataFrame({c: ["x"] for c in META_COLUMNS}).assign(uid=[sys.argv[2]], age_years=[40.0])
builder.upsert(EmbeddedBatch(frame, np.ones((1, 3), np.float32), np.array([1])))

def hang(staging):
    print(json.dumps({"staging": str(staging), "spill": str(builder._spill.path)}), flush=True)
    time.sleep(600)

builder.commit(staged_extras=hang)
"""


def folders(root: Path) -> set[Path]:
    """Every working folder of a build under an index root."""
    return {*root.glob(".build-*"), *(root / "versions").glob(".staging-*")}


def start_hanging_build(root: Path, uid: str, started: list[subprocess.Popen[str]]) -> tuple[int, dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HANGING_BUILD, str(root), uid],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the build is inside its commit
    assert line, proc.stderr.read() if proc.stderr else "no output"
    return proc.pid, json.loads(line)


# -- pruning ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_versions", [1, 2, 5])
def test_pruning_keeps_exactly_the_configured_versions_and_their_metrics_files(
    tmp_path: Path, keep_versions: int
) -> None:
    index = EmbeddedIndex(tmp_path, keep_versions=keep_versions)
    published: list[str] = []
    for i in range(keep_versions + 5):
        version = one_record_version(index, f"u{i}")
        # Earlier releases cached each version's evaluation beside it: files, not versions.
        (index.versions_dir / f"{version}.metrics.json").write_text("{}")
        index.publish(version)
        published.append(version)
        kept = published[-keep_versions:]
        assert sorted(p.name for p in index.versions_dir.iterdir() if p.is_dir()) == kept
        assert sorted(p.name for p in index.versions_dir.glob("*.metrics.json")) == [f"{v}.metrics.json" for v in kept]
    assert index.published() == published[-1]
    assert not folders(tmp_path)


def test_pruning_never_removes_the_published_version_or_a_live_builds_base(tmp_path: Path) -> None:
    index = EmbeddedIndex(tmp_path, keep_versions=1)
    base = one_record_version(index, "a")
    index.publish(base)
    with index.versions.staging(base):  # a build reading `base` is running while others publish
        newer = one_record_version(index, "b")
        index.publish(newer)
        assert index.versions.committed() == [base, newer]
    latest = one_record_version(index, "c")
    index.publish(latest)
    assert index.versions.committed() == [latest]

    # Another run published `newer` after this one committed `latest`: pruning for `latest` keeps both.
    newer = one_record_version(index, "d")
    (tmp_path / "CURRENT").write_text(newer)
    index.versions.prune(keep=latest)
    assert index.versions.committed() == [latest, newer]


# -- debris of builds that died ---------------------------------------------------------------------------


def test_a_killed_build_leaves_debris_the_next_build_removes_while_live_builds_keep_theirs(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    index = EmbeddedIndex(tmp_path, keep_versions=2)
    index.publish(one_record_version(index, "base"))
    killed_pid, killed = start_hanging_build(tmp_path, "killed", processes)
    _, live = start_hanging_build(tmp_path, "live", processes)
    assert read_owner(Path(killed["staging"])) == {
        "pid": killed_pid,
        "host": socket.gethostname(),
        "base": index.published(),
        "locked": True,
        "created": pytest.approx(time.time(), abs=120),
    }
    os.kill(killed_pid, signal.SIGKILL)
    processes[0].wait(timeout=30)
    assert {Path(killed["staging"]), Path(killed["spill"])} <= folders(tmp_path)  # what the kill left

    with index.versions.staging() as ours:  # a live build of this process, too
        version = one_record_version(index, "next")
        index.publish(version)
        assert folders(tmp_path) == {Path(live["staging"]), Path(live["spill"]), ours}
    assert index.versions.committed()[-1] == version
    assert not any((index.versions.path(v) / OWNER_FILE).exists() for v in index.versions.committed())


def _finished_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(proc.stdout)


@pytest.mark.parametrize(
    ("owner", "age_s", "removed"),
    [
        pytest.param("dead here", 0, True, id="a finished process of this host"),
        pytest.param("elsewhere", 0, False, id="another host, recent"),
        pytest.param("elsewhere", DEBRIS_GRACE_S + 60, True, id="another host, older than the grace period"),
        pytest.param(None, 0, False, id="no owner file yet, recent"),
        pytest.param(None, DEBRIS_GRACE_S + 60, True, id="no owner file, older than the grace period"),
    ],
)
def test_unlocked_working_folders_are_removed_by_their_owner_or_age(
    tmp_path: Path, owner: str | None, age_s: float, removed: bool
) -> None:
    index = EmbeddedIndex(tmp_path)
    left = [tmp_path / "versions" / ".staging-left", tmp_path / ".build-left"]
    for folder in left:
        folder.mkdir(parents=True)
        (folder / "records.parquet").write_bytes(b"half written")
        if owner is not None:
            host, pid = ("db-worker-7", 1) if owner == "elsewhere" else (socket.gethostname(), _finished_pid())
            (folder / OWNER_FILE).write_text(json.dumps({"pid": pid, "host": host, "base": None}))
        then = time.time() - age_s
        for path in (folder / OWNER_FILE, folder):
            if path.exists():
                os.utime(path, (then, then))
    version = one_record_version(index, "next")  # the next build
    index.publish(version)
    assert folders(tmp_path) == (set() if removed else set(left))


def test_what_a_killed_commit_or_publish_left_goes_at_once(tmp_path: Path) -> None:
    """Hand-made, what tests/unit/index/test_crash_safety.py makes by killing real processes (where
    strace may run): a whole staging folder whose owner file an earlier release unlinked before its
    rename, an owner file left in a version committed by this release, a pointer's temp file."""
    index = EmbeddedIndex(tmp_path, keep_versions=5)
    base = one_record_version(index, "base")
    index.publish(base)
    whole = index.versions_dir / ".staging-whole"
    shutil.copytree(index.versions.path(base), whole)  # manifest and all: only the rename was missing
    left_in_version = index.versions.path(base) / OWNER_FILE
    left_in_version.write_text(json.dumps({"pid": _finished_pid(), "host": socket.gethostname(), "locked": True}))
    temp = tmp_path / ".CURRENT.0123456789abcdef"
    temp.write_text(base + "\n")
    young = index.versions_dir / ".staging-young"  # no owner file yet, no manifest: a build starting
    young.mkdir()

    index.publish(one_record_version(index, "next"))
    assert folders(tmp_path) == {young}
    assert not left_in_version.exists() and not temp.exists()
    index.publish(base)  # the version the owner file was left in is whole
    assert index.open(base).count() == 1


def test_a_hold_ends_with_its_time(tmp_path: Path) -> None:
    """A run that never decides (failed, marked failed) does not pin its version for ever."""
    index = EmbeddedIndex(tmp_path, keep_versions=1)
    index.publish(one_record_version(index, "a"))
    held = one_record_version(index, "b")
    index.hold(held)
    index.publish(one_record_version(index, "c"))
    assert held in index.versions.committed()
    then = time.time() - HOLD_S - 60
    os.utime(tmp_path / HELD_DIR / held, (then, then))
    latest = one_record_version(index, "d")
    index.publish(latest)
    assert index.versions.committed() == [latest]
    assert not list((tmp_path / HELD_DIR).iterdir())
