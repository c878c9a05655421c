"""Crashes at the worst moments of a commit and a publish, by real processes stopped or killed on the
very system call (strace's syscall tampering: the call is not made when the process is killed on it):
what each leaves is removed by the next build or publish, or kept while its process lives, and what a
publish and a commit write is on disk before the rename that makes it count (the fsync calls, as the
kernel saw them)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.pointer import TEMP_PREFIX
from patientinsight.index.versions import OWNER_FILE
from tests.helpers import one_record_version

# Commit one record on the published version; then publish it if asked.
COMMIT = """
import sys
import numpy as np, pandas as pd
from patientinsight.index.embedded import EmbeddedIndex
from patientinsight.index.types import META_COLUMNS, EmbeddedBatch

index = EmbeddedIndex(sys.argv[1])
frame = pd.DataFrame({c: ["x"] for c in META_COLUMNS}).assign(uid=[sys.argv[2]], age_years=[40.0])
builder = index.builder(index.published(), {"dim": 3})
builder.upsert(EmbeddedBatch(frame, np.ones((1, 3), np.float32), np.array([1])))
version = builder.commit()
if sys.argv[3] == "publish":
    index.publish(version)
"""
# Say its pid, then publish a committed version.
PUBLISH = """
import os, sys
from patientinsight.index.embedded import EmbeddedIndex

print(os.getpid(), flush=True)
EmbeddedIndex(sys.argv[1]).publish(sys.argv[2])
"""


def _strace_works() -> bool:
    try:
        return subprocess.run(["strace", "-qq", "-o", os.devnull, "true"], timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


pytestmark = pytest.mark.skipif(not _strace_works(), reason="needs strace, allowed to trace (ptrace)")


def strace(script: str, *args: str, options: tuple[str, ...], log: Path | None = None) -> subprocess.Popen[str]:
    """`script` in a Python of its own under strace (its main thread only: the index writes there).
    No bytecode written: its renames would count among the calls."""
    command = ["strace", "-qq", "-o", str(log or os.devnull), *options, sys.executable, "-c", script, *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def traced(script: str, *args: str, calls: str, tmp_path: Path) -> list[str]:
    """The system calls `calls` (strace -e trace=) that `script` makes, fds shown with their paths."""
    log = tmp_path / "strace.log"
    proc = strace(script, *args, options=("-y", "-e", f"trace={calls}"), log=log)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return log.read_text().splitlines()


def nth_call(lines: list[str], call: str, pattern: str) -> int:
    """Which call of its kind (1 = the first) the first `call` whose line matches `pattern` is."""
    mine = [line for line in lines if line.startswith(f"{call}(")]
    return next(i for i, line in enumerate(mine, start=1) if re.search(pattern, line))


def debris(root: Path) -> set[str]:
    """What builds and publishes leave when they do not finish: working folders, owner files in versions,
    pointer temp files."""
    left = {*root.glob(".build-*"), *(root / "versions").glob(".staging-*"), *root.glob(f"{TEMP_PREFIX}*")}
    left |= set((root / "versions").glob(f"v*/{OWNER_FILE}"))
    return {str(p.relative_to(root)) for p in left}


# -- a commit killed ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "pattern", "committed"),
    [
        pytest.param("rename", r"\.staging-\w+\", \".*/versions/v", False, id="on the rename that commits"),
        pytest.param("unlink", rf"/versions/v\w+/{re.escape(OWNER_FILE)}", True, id="after the rename"),
    ],
)
def test_a_commit_killed_at_its_last_steps_leaves_nothing_that_waits(
    tmp_path: Path, processes: list[subprocess.Popen[str]], call: str, pattern: str, committed: bool
) -> None:
    """Earlier releases unlinked the owner file, then renamed: a kill in between left a whole staging
    folder without its owner that stayed a day (DEBRIS_GRACE_S). Killed anywhere in its commit, a
    build leaves nothing the next one keeps, and a version that was committed is whole."""
    rehearsal, root = EmbeddedIndex(tmp_path / "rehearsal"), tmp_path / "index"
    rehearsal.publish(one_record_version(rehearsal, "base"))
    lines = traced(COMMIT, str(rehearsal.root), "next", "commit", calls="rename,unlink", tmp_path=tmp_path)
    nth = nth_call(lines, call, pattern)

    index = EmbeddedIndex(root, keep_versions=5)
    index.publish(one_record_version(index, "base"))
    killed = strace(COMMIT, str(root), "killed", "commit", options=(f"--inject={call}:signal=SIGKILL:when={nth}",))
    processes.append(killed)
    killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL or killed.returncode == 128 + signal.SIGKILL
    left = debris(root)
    assert left, "the kill left nothing to clean: it came too late"
    assert (len(index.versions.committed()) == 2) is committed
    kept = one_record_version(index, "next")  # the next build
    assert not (remaining := debris(root)), f"of {left}, the next build kept {remaining}"
    index.publish(kept)
    for version in index.versions.committed():  # every version whole: published, opened, searched
        index.publish(version)
        assert index.open(version).search(np.ones(3, np.float32), 5)


# -- a publish stopped, then killed ---------------------------------------------------------------------


def wait_stopped(pid: int, temp_glob: Path, content: str) -> Path:
    """Wait until the publisher is stopped with its whole temp file written: a traced process shows as
    stopped ("t") for a moment at each call strace handles, so the stop must last (20 reads, 0.5 s)."""
    deadline, still = time.monotonic() + 120, 0
    while time.monotonic() < deadline and still < 20:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
        temps = list(temp_glob.parent.glob(temp_glob.name))
        whole = len(temps) == 1 and temps[0].read_text() == content
        still = still + 1 if state in ("t", "T") and whole else 0
        time.sleep(0.025)
    if still < 20:
        raise AssertionError(f"process {pid} did not stop with its temp file written")
    return temps[0]


def publish_second_under(
    inject: str, root: Path, processes: list[subprocess.Popen[str]]
) -> tuple[EmbeddedIndex, str, str, subprocess.Popen[str]]:
    """An index with two versions, the first published, and a publisher of the second started under the
    strace fault `inject`."""
    index = EmbeddedIndex(root, keep_versions=5)
    first, second = one_record_version(index, "a"), one_record_version(index, "b")
    index.publish(first)
    publisher = strace(PUBLISH, str(root), second, options=(f"--inject={inject}",))
    processes.append(publisher)
    return index, first, second, publisher


def test_a_publishers_temp_file_stays_while_it_lives_and_goes_once_it_is_killed(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    # Stopped right after its temp file reached the disk, before the rename: a live publisher.
    index, first, second, publisher = publish_second_under("fsync:signal=SIGSTOP:when=1", tmp_path, processes)
    assert publisher.stdout is not None
    pid = int(publisher.stdout.readline())
    temp = wait_stopped(pid, tmp_path / f"{TEMP_PREFIX}*", second + "\n")
    assert index.published() == first
    with index.versions.staging():  # another build starts meanwhile: its debris pass keeps the temp file
        pass
    assert temp.exists()

    os.kill(pid, signal.SIGKILL)  # a publisher that crashed before its rename
    publisher.communicate(timeout=60)
    assert temp.exists() and index.published() == first
    index.publish(one_record_version(index, "c"))
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_a_publisher_killed_on_its_rename_leaves_a_temp_file_the_next_publish_removes(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    index, first, second, killed = publish_second_under("rename:signal=SIGKILL:when=1", tmp_path, processes)
    killed.communicate(timeout=300)
    (temp,) = tmp_path.glob(f"{TEMP_PREFIX}*")  # earlier releases never removed it
    assert temp.read_text() == second + "\n" and index.published() == first
    index.publish(second)
    assert index.published() == second and not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


# -- on disk before it counts ---------------------------------------------------------------------------


def fsynced(line: str) -> str | None:
    found = re.match(r"fsync\(\d+<(.*)>\)", line)
    return found.group(1) if found else None


def test_commit_and_publish_reach_the_disk_before_their_renames(tmp_path: Path) -> None:
    root = (tmp_path / "index").resolve()
    index = EmbeddedIndex(root)
    index.publish(one_record_version(index, "base"))
    lines = traced(COMMIT, str(root), "new", "publish", calls="fsync,rename", tmp_path=tmp_path)
    renames = {i: re.findall(r'"([^"]+)"', line) for i, line in enumerate(lines) if line.startswith("rename(")}
    synced = {i: fsynced(line) for i, line in enumerate(lines) if line.startswith("fsync(")}

    # The commit: every file of the staged version, and its folders, then the rename, then the versions folder.
    (commit_at,) = [i for i, (src, _) in renames.items() if Path(src).name.startswith(".staging-")]
    staging, version = (Path(p) for p in renames[commit_at])
    files = {p for p in staging.parent.joinpath(version.name).rglob("*")}
    staged = {Path(p) for i, p in synced.items() if i < commit_at and p}
    assert {staging / p.relative_to(version) for p in files} | {staging} <= staged
    assert str(root / "versions") in [p for i, p in synced.items() if i > commit_at]

    # The publish: the temp file, then the rename onto CURRENT, then the index root.
    (publish_at,) = [i for i, (_, dst) in renames.items() if dst == str(root / "CURRENT")]
    temp = renames[publish_at][0]
    assert Path(temp).name.startswith(TEMP_PREFIX)
    assert temp in [p for i, p in synced.items() if commit_at < i < publish_at]
    assert str(root) in [p for i, p in synced.items() if i > publish_at]
    assert index.published() == version.name and (root / "CURRENT").read_text() == version.name + "\n"
    assert not list(root.glob(f"{TEMP_PREFIX}*"))
