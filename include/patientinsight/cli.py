"""`patientinsight` command line: the ingest steps without a scheduler, and the index status."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from patientinsight.settings import get_settings


def _ingest(args: argparse.Namespace) -> dict[str, Any]:
    from patientinsight.ingest import run_ingest

    run_id = args.run_id or datetime.now(UTC).strftime("cli__%Y%m%dT%H%M%S_") + uuid.uuid4().hex[:6]
    return run_ingest(args.source, get_settings(), full_refresh=args.full_refresh, limit=args.limit, run_id=run_id)


def _status(args: argparse.Namespace) -> dict[str, Any]:
    from patientinsight.pipeline import make_index

    index = make_index(get_settings())
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
    from patientinsight.sample import write_sample

    path = write_sample(Path(args.out) if args.out else get_settings().sample_source)
    return {"sample": str(path)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patientinsight", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="read, validate, profile, embed, index and publish a source")
    ingest.add_argument("source", help="local path, file:// or s3:// URI (.csv, .json, .jsonl, optionally .gz)")
    ingest.add_argument("--full-refresh", action="store_true", help="delete indexed records missing from the source")
    ingest.add_argument("--limit", type=int, default=None, help="read at most this many rows")
    ingest.add_argument("--run-id", default=None, help="name of the run folder (default: a new one)")
    ingest.add_argument("--json", action="store_true", help="print one JSON object")
    ingest.set_defaults(func=_ingest)

    status = sub.add_parser("status", help="the published index version and its record count")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    sample = sub.add_parser("sample", help="write the synthetic sample in PMC-Patients v1 CSV format")
    sample.add_argument("out", nargs="?", default=None, help="default: PATIENTINSIGHT_HOME/sample/...")
    sample.add_argument("--json", action="store_true")
    sample.set_defaults(func=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = args.func(args)
    except Exception as exc:  # the message names file, row and field; no traceback for users
        logging.getLogger("patientinsight").error("%s: %s", type(exc).__name__, exc)
        return 1
    if args.json:
        print(json.dumps(result, default=str))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
