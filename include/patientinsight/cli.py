"""`patientinsight` command line: the ingest steps without a scheduler, and the index status."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from patientinsight import progress
from patientinsight.ingest.formats import described as source_formats
from patientinsight.settings import RetrieverName, Settings, get_settings

if TYPE_CHECKING:
    from patientinsight.index.types import VectorIndex

# Exit codes, documented in README.md and `ingest --help`: scripts can tell a held-back version from
# success and from failure (2 is argparse's, for a wrong command line).
EXIT_OK, EXIT_ERROR, EXIT_HELD = 0, 1, 3
INGEST_EPILOG = """exit codes:
  0  done: the new version is published (or nothing changed)
  1  failed: the error is logged (a bad source, too many quarantined rows, ...)
  2  wrong command line
  3  held back: the quality gate did not publish the new version (the published one stays);
     the reason is logged; re-run with --allow-worse to publish anyway"""


class IngestProgress(logging.Handler):
    """Progress bars of `ingest` on a terminal, fed by the progress events the steps attach to their log
    lines (patientinsight.progress): rows read (count and rate), then records embedded out of the plan's
    total (rate and ETA), moved within a shard by the encoder's events."""

    def __init__(self, file: Any = None) -> None:
        super().__init__(logging.INFO)
        self.file = file
        self.reading: Any = None
        self.embedding: Any = None
        self.shard_size = 0
        self.finished = 0  # records of the shards done

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = progress.event_of(record)
            if event is not None:
                self.follow(event)
        except Exception:  # a bar must never fail the ingest
            self.handleError(record)

    def follow(self, event: progress.Progress) -> None:
        from tqdm import tqdm

        if isinstance(event, progress.RowsRead):
            if self.reading is None:
                self.reading = tqdm(desc="reading", unit=" rows", file=self.file, dynamic_ncols=True)
            self.reading.update(event.rows - self.reading.n)
        elif isinstance(event, progress.ShardsPlanned):
            self.close_bars()  # reading is done
            self.shard_size = event.shard_size
            if event.records:
                self.embedding = tqdm(
                    total=event.records, desc="embedding", unit=" records", file=self.file, dynamic_ncols=True
                )
        elif isinstance(event, progress.TextsEncoded) and self.embedding is not None and event.total:
            shard = min(self.shard_size, self.embedding.total - self.finished)  # shards run in plan order
            self._move(self.finished + shard * event.done // event.total)
        elif isinstance(event, progress.ShardEmbedded) and self.embedding is not None:
            self.finished += event.records
            self._move(self.finished)

    def _move(self, position: int) -> None:
        self.embedding.update(min(position, self.embedding.total) - self.embedding.n)

    def close_bars(self) -> None:
        for bar in (self.reading, self.embedding):
            if bar is not None:
                bar.close()
        self.reading = self.embedding = None

    def close(self) -> None:
        self.close_bars()
        super().close()


@contextlib.contextmanager
def _progress_bars() -> Iterator[None]:
    """Bars on stderr when it is a terminal, the log lines printed above them; nothing otherwise."""
    if not sys.stderr.isatty():
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    handler = IngestProgress()
    logger = logging.getLogger("patientinsight")
    logger.addHandler(handler)
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def _ingest(args: argparse.Namespace) -> dict[str, Any]:
    from patientinsight.airflow.connections import pinecone_credentials
    from patientinsight.ingest.run import run_ingest

    settings = get_settings()
    run_id = args.run_id or datetime.now(UTC).strftime("cli__%Y%m%dT%H%M%S_") + uuid.uuid4().hex[:6]
    with _progress_bars():
        return run_ingest(
            args.source,
            settings,
            full_refresh=args.full_refresh,
            limit=args.limit,
            run_id=run_id,
            allow_worse=args.allow_worse,
            encoding=args.encoding,
            credentials=pinecone_credentials,
        )


def _ingest_exit_code(report: dict[str, Any]) -> int:
    """EXIT_HELD, with the gate's reason, when the gate held the new version back; else EXIT_OK."""
    gate = report.get("gate") or {}
    if not gate.get("needs_approval") or report.get("published"):
        return EXIT_OK
    logging.getLogger("patientinsight").error(
        "version %s held back by the quality gate, %s stays published: %s (exit code %d)",
        report.get("staged_version"),
        report.get("index_version"),
        gate.get("reason"),
        EXIT_HELD,
    )
    return EXIT_HELD


def _index(settings: Settings) -> VectorIndex:
    """The configured index; Pinecone's key from the Airflow connection where there is one (index.factory)."""
    from patientinsight.airflow.connections import pinecone_credentials
    from patientinsight.index.factory import make_index

    return make_index(settings, pinecone_credentials)


def _eval(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (retriever, query mode): the published index on the holdout half, or the official
    benchmark with --benchmark."""
    from patientinsight.embedding.encoder import make_embedder
    from patientinsight.evaluation import report
    from patientinsight.retrieval.searcher import RETRIEVERS

    settings = get_settings()
    retrievers = (args.retriever,) if args.retriever else RETRIEVERS
    if args.benchmark:
        return report.evaluate_benchmark(
            Path(args.benchmark), args.split, make_embedder(settings), settings, retrievers
        )
    index = _index(settings)
    version = index.published()
    if version is None:
        raise RuntimeError("no published index: run `patientinsight ingest SOURCE` first")
    modes = (args.queries,) if args.queries else ("short", "full")
    rows = report.evaluate_retrievers(index.open(version), make_embedder(settings), settings, retrievers, modes)
    return rows if args.by_group else [{k: v for k, v in row.items() if k != "by_group"} for row in rows]


def _render_rows(rows: list[dict[str, Any]]) -> str:
    keys = ("retriever", "queries_mode", "protocol", "mrr", "p@10", "ndcg@10", "recall@100", "queries", "default")
    lines = ["\t".join(keys)]
    lines += ["\t".join(str(row.get(k, "")) for k in keys) for row in rows]
    return "\n".join(lines)


def _status(args: argparse.Namespace) -> dict[str, Any]:
    index = _index(get_settings())
    version = index.published()
    if version is None:
        return {"index_version": None, "records": 0}
    manifest = index.manifest(version)
    return {
        "index_version": version,
        "records": index.open(version).count(),
        "vectors": manifest.get("vectors"),
        "model": manifest.get("model"),
        "strategy": manifest.get("strategy"),
        "created_at": manifest.get("created_at"),
    }


def _sample(args: argparse.Namespace) -> dict[str, Any]:
    from patientinsight.records.synthetic import write_sample

    path = write_sample(Path(args.out) if args.out else get_settings().sample_source)
    return {"sample": str(path)}


def _serve(args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn

    from serving.protocol import JsonH11Protocol

    settings = get_settings()
    host = args.host or settings.serve_host
    port = args.port or settings.serve_port
    logging.getLogger("patientinsight").info("query service on http://%s:%d (page at /, API docs at /docs)", host, port)
    # The protocol bounds slow and many clients (PATIENTINSIGHT_SERVE_* settings, README "The query
    # service"): keep-alive idle time, time to send a request's head, connections and requests in flight.
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, log_level="info", http=JsonH11Protocol)
    return {}


def _query(args: argparse.Namespace) -> dict[str, Any]:
    """The API's answer, computed in this process from the published index."""
    from patientinsight.embedding.encoder import make_embedder
    from patientinsight.generation.answering import answer
    from patientinsight.generation.factory import make_generator
    from patientinsight.index.types import Filters
    from patientinsight.retrieval.cases import CaseIndex

    settings = get_settings()
    index = _index(settings)
    version = index.published()
    if version is None:
        raise RuntimeError("no index version is published yet: run `patientinsight ingest SOURCE` first")
    if len(args.text) > settings.max_query_chars:
        raise ValueError(f"text: at most {settings.max_query_chars} characters")
    loaded = CaseIndex.for_settings(index.open(version), make_embedder(settings), settings)
    filters = Filters(args.age_min, args.age_max, args.sex)
    return answer(
        args.text,
        args.k,
        filters,
        not args.no_generate,
        loaded,
        make_generator(settings),
        settings.passages_per_case,
        settings.generator_timeout_s,
    )


def _render_query(result: dict[str, Any]) -> str:
    lines = [f"index {result['index_version']} ({result['retriever']}), {len(result['cases'])} cases"]
    for i, case in enumerate(result["cases"], start=1):
        who = ", ".join(str(v) for v in (case.get("age_display"), case.get("sex")) if v)  # as the page says it
        lines.append(f"[{i}] {case['score']:.3f} {case['title']}{f' ({who})' if who else ''} ({case['article_url']})")
        lines.extend(f"    - {passage}" for passage in case["passages"])
    analysis = result["analysis"]
    if analysis["text"]:
        lines += ["", analysis["text"]]
    if analysis["error"]:
        lines.append(f"analysis error: {analysis['error']}")
    return "\n".join(lines)


def _embedding_check(args: argparse.Namespace) -> dict[str, Any]:
    """The table that 'auto' measured on this machine (from the model cache, or measured now), and what
    the settings make the encoder use."""
    from patientinsight.embedding.encoder import Embedder, make_embedder

    settings = get_settings()
    auto = Embedder(
        settings.embedding_model, batch_size=settings.embed_batch_size, threads=settings.embed_threads,
        cache_dir=settings.model_cache,
    )  # fmt: skip
    found = auto.measured(again=args.again).as_dict()  # first: the settings' own embedder may reuse it
    return {"settings": make_embedder(settings).requested.line(), **found}


def _render_embedding_check(result: dict[str, Any]) -> str:
    how = "measured now" if result["fresh"] else f"measured {result['measured_at']}"
    lines = [f"auto: {result['backend']} {result['precision']} ({how}; {result['cache']})", result["settings"], ""]
    lines.append(f"{'backend':<9} {'precision':<9} {'texts/s':>8} {'rounds':>6} {'cos min':>8} {'cos mean':>8}  rule")
    for row in result["table"]:
        lines.append(
            f"{row['backend']:<9} {row['precision']:<9} {row['texts_per_s']:>8} {row['rounds']:>6} "
            f"{row['cosine_min']:>8.4f} {row['cosine_mean']:>8.4f}  {row['note']}"
        )
    return "\n".join(lines)


def _k(value: str) -> int:
    k = int(value)
    if not 1 <= k <= 50:
        raise argparse.ArgumentTypeError("k must be between 1 and 50")
    return k


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patientinsight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser(
        "ingest",
        help="read, validate, profile, embed, index and publish a source",
        epilog=INGEST_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ingest.add_argument("source", help=f"local path, file:// or s3:// URI ({source_formats()})")
    ingest.add_argument("--full-refresh", action="store_true", help="delete indexed records missing from the source")
    ingest.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    ingest.add_argument("--run-id", default=None, help="name of the run folder (default: a new one)")
    ingest.add_argument("--allow-worse", action="store_true", help="publish even when the quality gate holds back")
    ingest.add_argument("--encoding", default=None, help="the source's text encoding, e.g. cp1252 (default: utf-8)")
    ingest.add_argument("--json", action="store_true", help="print one JSON object")
    ingest.set_defaults(func=_ingest, exit_code=_ingest_exit_code)

    evaluate = sub.add_parser("eval", help="retrieval quality of the published index (holdout half) or a benchmark")
    evaluate.add_argument("--retriever", choices=get_args(RetrieverName), default=None)
    evaluate.add_argument("--queries", choices=["full", "short"], default=None, help="default: both")
    evaluate.add_argument("--benchmark", default=None, help="folder of the official files in BEIR format")
    evaluate.add_argument("--split", default="test", help="qrels split of --benchmark (default: test)")
    evaluate.add_argument("--by-group", action="store_true", help="add metrics by sex and age band")
    evaluate.add_argument("--json", action="store_true", help="one JSON object per line")
    evaluate.set_defaults(func=_eval, render=_render_rows)

    status = sub.add_parser("status", help="the published index version and its record count")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    sample = sub.add_parser("sample", help="write the synthetic sample in PMC-Patients v1 CSV format")
    sample.add_argument("out", nargs="?", default=None, help="default: PATIENTINSIGHT_HOME/sample/...")
    sample.add_argument("--json", action="store_true")
    sample.set_defaults(func=_sample)

    serve = sub.add_parser("serve", help="run the query API and its page (uvicorn)")
    serve.add_argument("--host", default=None, help="default: PATIENTINSIGHT_SERVE_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="default: PATIENTINSIGHT_SERVE_PORT (8000)")
    serve.set_defaults(func=_serve)

    query = sub.add_parser("query", help="answer a patient description from the published index, as the API does")
    query.add_argument("text", help="the patient, described in plain text")
    query.add_argument("-k", type=_k, default=5, help="how many similar cases (1 to 50, default 5)")
    query.add_argument("--age-min", type=float, default=None)
    query.add_argument("--age-max", type=float, default=None)
    query.add_argument("--sex", choices=["M", "F"], default=None)
    query.add_argument("--no-generate", action="store_true", help="the cases only, no analysis")
    query.add_argument("--json", action="store_true", help="print the API's JSON")
    query.set_defaults(func=_query, render=_render_query)

    check = sub.add_parser("embedding-check", help="the encoder backends and precisions measured on this machine")
    check.add_argument("--again", action="store_true", help="measure again (and rewrite the cached choice)")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=_embedding_check, render=_render_embedding_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = args.func(args)
    except Exception as exc:  # the message names file, row and field; no traceback for users
        logging.getLogger("patientinsight").error("%s: %s", type(exc).__name__, exc)
        return EXIT_ERROR
    if getattr(args, "json", False):
        for item in result if isinstance(result, list) else [result]:
            print(json.dumps(item, default=str))
    elif getattr(args, "render", None):
        print(args.render(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    exit_code = getattr(args, "exit_code", None)  # after the output: a held run still prints its report
    return exit_code(result) if exit_code else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
