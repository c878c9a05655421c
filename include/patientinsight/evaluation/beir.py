"""The official PMC-Patients benchmark files in BEIR format: corpus.jsonl, queries.jsonl and
qrels/<split>.tsv, so that `patientinsight eval --benchmark DIR --split test` follows the published
protocol."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from patientinsight.evaluation.metrics import Query


def _jsonl(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_corpus(folder: Path) -> pd.DataFrame:
    """Corpus documents as index records (uid, title, text; no age, sex or PMID in BEIR)."""
    rows = [
        {"uid": str(d["_id"]), "title": d.get("title") or "", "text": d.get("text") or ""}
        for d in _jsonl(folder / "corpus.jsonl")
    ]
    frame = pd.DataFrame(rows, columns=["uid", "title", "text"])
    return frame.assign(
        pmid="0", age_years=float("nan"), sex="", pub_date=None, similar_patients="{}", relevant_articles="{}",
        content_hash="",
    )  # fmt: skip


def load_queries(folder: Path, split: str) -> list[Query]:
    """Queries that have judgments in qrels/<split>.tsv (header: query-id, corpus-id, score)."""
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise FileNotFoundError(f"{qrels_path}: no judgments for split '{split}'")
    judgments: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            score = int(float(row["score"]))
            if score > 0:
                judgments.setdefault(row["query-id"], {})[row["corpus-id"]] = score
    texts = {str(q["_id"]): q["text"] for q in _jsonl(folder / "queries.jsonl")}
    return [Query(qid, texts[qid], rel) for qid, rel in judgments.items() if qid in texts]
