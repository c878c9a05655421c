"""Data profile of the validated records (ydata-profiling): an HTML and a JSON report."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


def profile_records(frame: pd.DataFrame, out_dir: Path, title: str) -> dict[str, str]:
    """Minimal mode keeps it fast and bounded; the caller passes at most a sample of the rows."""
    from ydata_profiling import ProfileReport  # heavy import: only the profiling step pays for it

    view = frame.drop(columns=["content_hash", "similar_patients", "relevant_articles"], errors="ignore")
    view = view.assign(text_chars=view["text"].str.len()).drop(columns=["text"])
    report = ProfileReport(view, title=title, minimal=True, progress_bar=False)
    html, js = out_dir / "profile.html", out_dir / "profile.json"
    report.to_file(html, silent=True)
    report.to_file(js, silent=True)
    log.info("profiled %d records into %s", len(frame), out_dir)
    return {"html": str(html), "json": str(js)}
