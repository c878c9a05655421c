"""index.pages: what a read mapped leaves the process's resident set, and the data reads the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patientinsight.index.pages import open_mapped, unmap_pages


def resident_kib(path: Path) -> int:
    """Resident KiB of this process's maps of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a map's first line: range perms offset dev inode [path]
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_unmapped_pages_leave_the_resident_set_and_read_the_same(tmp_path: Path) -> None:
    values = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)  # 4 MB
    path = tmp_path / "values.npy"
    np.save(path, values)
    mapped = np.load(path, mmap_mode="r")
    assert float(mapped.sum(dtype=np.float64)) == float(values.sum(dtype=np.float64))  # every page read
    assert resident_kib(path) > 3000
    unmap_pages(mapped[10:20])  # a view finds its map too
    assert resident_kib(path) < 100
    assert np.array_equal(mapped, values)  # read again from the page cache, unchanged

    raw = open_mapped(path)
    assert raw[: len(b"\x93NUMPY")] == b"\x93NUMPY"
    unmap_pages(raw)
    unmap_pages(values)  # not mapped: left alone
    assert np.array_equal(np.frombuffer(raw, dtype=np.float32, offset=len(raw) - values.nbytes), values)
