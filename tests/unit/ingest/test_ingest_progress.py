"""`patientinsight ingest` on a terminal: progress bars (rows read; records embedded with rate and ETA)
that follow the progress events the steps attach to their log lines, which the task logs keep as they
are. Off when stderr is no terminal."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from patientinsight import cli, progress
from patientinsight.cli import IngestProgress
from patientinsight.embedding.encoder import make_embedder
from patientinsight.index.factory import make_index
from patientinsight.ingest.shards import embed_shard, plan_shards
from patientinsight.ingest.steps import plan_changes, validate_source
from patientinsight.progress import RowsRead, ShardEmbedded, ShardsPlanned, TextsEncoded
from patientinsight.settings import Settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Events(logging.Handler):
    """Every progress event logged under `patientinsight`, with the line it rode on."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[progress.Progress, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = progress.event_of(record)
        if event is not None:
            self.seen.append((event, record.getMessage()))


@pytest.fixture
def events() -> Iterator[Events]:
    handler = Events()
    logger = logging.getLogger("patientinsight")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_steps_and_the_encoder_emit_the_events_the_bars_follow(
    events: Events, sample_csv: Path, tmp_path: Path
) -> None:
    # The bars read these events, not the words: the lines stay as the task logs have always shown them.
    settings = Settings(home=tmp_path / "home")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = validate_source(str(sample_csv), run_dir, chunk_rows=20, max_quarantine_ratio=0.5)
    embedder = make_embedder(settings)
    plan_changes(run_dir, make_index(settings), embedder.describe(), full_refresh=False)
    (first, *_) = shards = plan_shards(run_dir, 30)
    embedder.encode(["a text", "another text", "a third"], progress_every=2)
    embed_shard(run_dir, embedder, first)
    seen = [event for event, _ in events.seen]
    read = [e.rows for e in seen if isinstance(e, RowsRead)]
    assert read == sorted(read) and read[-1] == report["read"] and len(read) > 1
    assert ShardsPlanned(report["valid"], len(shards), 30) in seen
    assert [e for e in seen if isinstance(e, TextsEncoded)][:2] == [TextsEncoded(2, 3), TextsEncoded(3, 3)]
    assert ShardEmbedded(0, first["stop"] - first["start"]) in seen
    lines = dict((type(event), line) for event, line in events.seen)
    assert lines[RowsRead].startswith(f"validated {report['read']} rows (")
    assert lines[ShardsPlanned] == f"{report['valid']} records to embed in {len(shards)} shards of at most 30"
    assert lines[TextsEncoded].startswith("embedded 3/3 texts (")
    assert lines[ShardEmbedded].startswith(f"shard 0: embedded {first['stop'] - first['start']} records (")


def test_rows_then_records_with_rate_and_eta() -> None:
    out = io.StringIO()
    handler = IngestProgress(file=out)
    logger = logging.getLogger("patientinsight.test_progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("read", extra=progress.extra(RowsRead(5000)))
        logger.info("read", extra=progress.extra(RowsRead(12000)))
        assert handler.reading.n == 12000
        logger.info("planned", extra=progress.extra(ShardsPlanned(11980, 3, 5000)))
        assert handler.reading is None and handler.embedding.total == 11980
        logger.info("encoded", extra=progress.extra(TextsEncoded(1024, 5000)))  # within the first shard
        assert handler.embedding.n == 1024
        logger.info("shard", extra=progress.extra(ShardEmbedded(0, 5000)))
        # chunk strategy: texts are chunks, two per record
        logger.info("encoded", extra=progress.extra(TextsEncoded(2048, 10240)))
        assert handler.embedding.n == 5000 + 1000
        logger.info("shard", extra=progress.extra(ShardEmbedded(1, 5000)))
        logger.info("shard", extra=progress.extra(ShardEmbedded(2, 1980)))
        assert handler.embedding.n == handler.embedding.total == 11980
        logger.info("evaluation of %s (%s): %s", "v1", "hybrid_rerank", {})  # lines without an event: ignored
        logger.info("validated %d rows (%d valid, %d quarantined)", 99999, 0, 0)  # words are never parsed
        assert handler.reading is None and handler.embedding.n == 11980
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = out.getvalue()
    assert "reading: " in text and "12000 rows" in text
    assert "embedding: 100%" in text and "11980/11980" in text and "records/s" in text
    assert "<" in text  # tqdm's "elapsed<remaining"


def test_nothing_to_embed_makes_no_bar() -> None:
    handler = IngestProgress(file=io.StringIO())
    handler.emit(logging.makeLogRecord({"msg": "planned", progress.ATTRIBUTE: ShardsPlanned(0, 0, 5000)}))
    handler.emit(logging.makeLogRecord({"msg": "encoded", progress.ATTRIBUTE: TextsEncoded(1, 1)}))
    assert handler.embedding is None


@pytest.mark.parametrize("terminal", [True, False])
def test_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    monkeypatch.setattr("sys.stderr", Terminal() if terminal else io.StringIO())
    logger = logging.getLogger("patientinsight")
    with cli._progress_bars():
        inside = [h for h in logger.handlers if isinstance(h, IngestProgress)]
    assert len(inside) == (1 if terminal else 0)
    assert not [h for h in logger.handlers if isinstance(h, IngestProgress)]
