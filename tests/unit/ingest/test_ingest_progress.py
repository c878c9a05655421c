"""`patientinsight ingest` on a terminal: progress bars (rows read; records embedded with rate and ETA)
that follow the progress lines the steps log, which the task logs keep. Off when stderr is no terminal."""

from __future__ import annotations

import importlib.util
import io
import logging
from pathlib import Path

import pytest

from patientinsight import cli
from patientinsight.cli import ENCODE_LINE, PLAN_LINE, READ_LINE, SHARD_LINE, IngestProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def source_of(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec and spec.origin
    return Path(spec.origin).read_text()


def test_the_bars_follow_lines_the_steps_really_log() -> None:
    # A reworded log line would leave the bar still: the lines must be the ones the modules write.
    assert f'"{READ_LINE}"' in source_of("patientinsight.ingest.steps")
    assert f'"{PLAN_LINE}"' in source_of("patientinsight.ingest.shards")
    assert f'"{SHARD_LINE}"' in source_of("patientinsight.ingest.shards")
    assert f'"{ENCODE_LINE}"' in source_of("patientinsight.embedding.encoder")


def test_rows_then_records_with_rate_and_eta() -> None:
    out = io.StringIO()
    handler = IngestProgress(file=out)
    logger = logging.getLogger("patientinsight.test_progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info(READ_LINE, 5000, 4990, 10)
        logger.info(READ_LINE, 12000, 11980, 20)
        assert handler.reading.n == 12000
        logger.info(PLAN_LINE, 11980, 3, 5000)
        assert handler.reading is None and handler.embedding.total == 11980
        logger.info(ENCODE_LINE, 1024, 5000, 25.0)  # within the first shard
        assert handler.embedding.n == 1024
        logger.info(SHARD_LINE, 0, 5000, 25.0)
        logger.info(ENCODE_LINE, 2048, 10240, 25.0)  # chunk strategy: texts are chunks, two per record
        assert handler.embedding.n == 5000 + 1000
        logger.info(SHARD_LINE, 1, 5000, 25.0)
        logger.info(SHARD_LINE, 2, 1980, 25.0)
        assert handler.embedding.n == handler.embedding.total == 11980
        logger.info("evaluation of %s (%s): %s", "v1", "hybrid_rerank", {})  # other lines: ignored
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = out.getvalue()
    assert "reading: " in text and "12000 rows" in text
    assert "embedding: 100%" in text and "11980/11980" in text and "records/s" in text
    assert "<" in text  # tqdm's "elapsed<remaining"


def test_nothing_to_embed_makes_no_bar() -> None:
    handler = IngestProgress(file=io.StringIO())
    record = logging.LogRecord("patientinsight", logging.INFO, __file__, 1, PLAN_LINE, (0, 0, 5000), None)
    handler.emit(record)
    handler.emit(logging.LogRecord("patientinsight", logging.INFO, __file__, 1, ENCODE_LINE, (1, 1, 1.0), None))
    assert handler.embedding is None


@pytest.mark.parametrize("terminal", [True, False])
def test_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    monkeypatch.setattr("sys.stderr", Terminal() if terminal else io.StringIO())
    logger = logging.getLogger("patientinsight")
    with cli._progress_bars():
        inside = [h for h in logger.handlers if isinstance(h, IngestProgress)]
    assert len(inside) == (1 if terminal else 0)
    assert not [h for h in logger.handlers if isinstance(h, IngestProgress)]
