"""Memory and re-run time of a 250,000-record ingest on one machine (the "Scale" goals).

    python benchmarks/scale_250k.py --json                  # 250,000 generated records
    python benchmarks/scale_250k.py --records 20000 --json  # a smaller rehearsal
    python benchmarks/scale_250k.py --index pinecone --corpus realistic --json  # into Pinecone (the stand-in)

Phases, each in its own process so that its peak resident memory (ru_maxrss) is its own:
1. generate: a v1 CSV of N records. `--corpus copies` (the default): the real records repeated with new
   uids (text reused: fine for size; no similar-patient link resolves, so the evaluation has no
   queries); `linked`: the same with each copy's links to the same copy of the real ones (the
   evaluation runs, as on real data); `realistic`: benchmarks/realistic_corpus.py (real lengths, a
   growing vocabulary, in-article links), as the full-size numbers use;
2. seed: the whole ingest (run_ingest) into an empty index, with a STAND-IN embedder that returns
   deterministic random unit vectors of the model's shape (384 float32) instead of running the model
   (embedding 250,000 real texts takes about 3 hours here). Everything else is real: validation,
   content hashes, records, vectors file, BM25 lexical index, evaluation, publish;
3. rerun: run_ingest again over the same unchanged source with the REAL embedder configured; nothing
   may be embedded (asserted);
4. model: the real model's own resident memory while encoding 1,000 real texts (embedding runs part by
   part, so its memory does not grow with the input);
5. update (`--update K`, with `--corpus realistic`): run_ingest of K new realistic records into the
   published version with the real embedder, evaluation and gate included; the new version's manifest
   says how many vectors it wrote (`vectors_written`).

With `--index pinecone` the seed and the re-run write to the Pinecone stand-in (tests/pinecone_standin.py,
Pinecone's HTTP protocol through the official SDK) instead of the embedded index. The stand-in runs in a
process of its own (it holds every vector it is sent), so the measured ingest process's peak is its own;
the stand-in's peak is printed beside it, not counted. The model phase is the same for both and is
skipped. Run it from the repository root (the stand-in is imported from tests/).
Reading the re-run: it embeds nothing and builds nothing; its evaluation (up to `eval_max_queries`
queries per mode against the published version) is the part that grows with the corpus.

Prints one JSON object (--json) or a Markdown table. No record text is printed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import REAL_CSV, machine, real_records, stamp

MB = 1024 * 1024


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def generate_source(path: Path, n: int, linked: bool = False) -> Path:
    """n records in the v1 CSV format (the sample's columns), written block by block: copy k of the
    real records gets uids '<uid>.r<k>' and a varied first word, as benchmarks/scale.py does. With
    `linked`, copy k's similar patients are the copies k of the real ones, so the evaluation has queries
    (about 28% of the records) as on real data; without, no link resolves and the evaluation is empty."""
    with REAL_CSV.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        written = 0
        for k in range(-(-n // len(rows))):
            block = []
            for row in rows[: n - written]:
                copy = dict(row)
                copy["patient_id"] = str(written + len(block))
                copy["patient_uid"] = f"{row['patient_uid']}.r{k}"
                copy["patient"] = f"Copy {k}. {row['patient']}"
                if linked:
                    copy["similar_patients"] = _linked_copy(row["similar_patients"], k)
                block.append(copy)
            writer.writerows(block)
            written += len(block)
    return path


def _linked_copy(similar: str, k: int) -> str:
    links = ast.literal_eval(similar) if similar.strip() else {}
    return repr({f"{uid}.r{k}": grade for uid, grade in links.items()})


def settings_for(home: Path) -> Any:
    from patientinsight.settings import Settings

    return Settings(home=home, mlflow_tracking_uri=f"sqlite:///{home}/mlflow.db")


def _stand_in_class() -> type:
    from patientinsight.embedding.encoder import Embedder

    class StandInEmbedder(Embedder):
        """The real model's description and chunking, but random unit vectors instead of the model:
        one seeded generator per text, so the same text always gets the same vector."""

        def encode(self, texts: Sequence[str], progress_every: int = 1024) -> np.ndarray:
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i, text in enumerate(texts):
                out[i] = np.random.default_rng(zlib.crc32(text.encode("utf-8"))).standard_normal(self.dim)
            out /= np.linalg.norm(out, axis=1, keepdims=True)
            return out

    return StandInEmbedder


def _timed_steps(run: Any, marks: dict[str, dict[str, float]]) -> None:
    """Wrap each step of the ingest run to record its seconds (summed over the shards of `embed`) and
    the process's peak RSS once it is done."""
    for step in ("validate", "plan", "embed", "profile", "build", "evaluate", "publish"):
        original: Callable[..., Any] = getattr(run, step)

        def wrapped(*args: Any, _f: Callable[..., Any] = original, _s: str = step, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = _f(*args, **kwargs)
            before = marks.get(_s, {}).get("s", 0.0)
            marks[_s] = {"s": round(before + time.perf_counter() - started, 2), "peak_rss_mb": peak_rss_mb()}
            return result

        setattr(run, step, wrapped)


def realistic_source(path: Path, n: int, start: int = 0) -> Path:
    from realistic_corpus import write_csv  # benchmarks/, beside this script

    return write_csv(path, n, start=start)


def phase_ingest(
    source: Path, home: Path, stand_in: bool, eval_max_queries: int | None, run_id: str | None = None
) -> dict[str, Any]:
    """One run_ingest in this process; the step marks and the peak RSS of the whole run."""
    from patientinsight.ingest import run

    settings = settings_for(home)
    if eval_max_queries is not None:
        settings = settings.model_copy(update={"eval_max_queries": eval_max_queries})
    if stand_in:
        real_make = run.make_embedder
        stand_in_class = _stand_in_class()

        def make_stand_in(s: Any) -> Any:
            embedder = real_make(s)
            embedder.__class__ = stand_in_class  # same settings and description, no model runs
            return embedder

        run.make_embedder = make_stand_in  # type: ignore[assignment]
    marks: dict[str, dict[str, float]] = {}
    _timed_steps(run, marks)
    started = time.perf_counter()
    run_id = run_id or ("stand-in-seed" if stand_in else "unchanged-rerun")
    report = run.run_ingest(str(source), settings, run_id=run_id)
    total = time.perf_counter() - started
    from patientinsight.index.versions import VersionStore

    version = report["staged_version"]
    manifest = VersionStore(settings.index_dir).manifest(version) if version else {}
    return {
        "total_s": round(total, 1),
        "peak_rss_mb": peak_rss_mb(),
        "read": report["read"],
        "indexed": report["indexed"],
        "embedded": report["embedded"],
        "unchanged": report["unchanged"],
        "index_records": report["index_records"],
        "published": report["published"],
        "version": version,
        "vectors": manifest.get("vectors", 0),
        "vectors_written": manifest.get("vectors_written"),  # Pinecone: what this version sent
        "eval_queries": _eval_queries(report),
        "steps": marks,
    }


def _eval_queries(report: dict[str, Any]) -> int:
    """The queries the run's evaluation ran, over its comparisons and modes."""
    modes = report.get("evaluation", {}).get("comparison", {}).get("modes", {})
    return sum(int(check.get("queries", 0)) for checks in modes.values() for check in checks.values())


def phase_model(texts: int) -> dict[str, Any]:
    """The real model's resident memory: RSS after imports, after loading, and the peak while encoding."""
    from patientinsight.embedding.encoder import make_embedder

    sample = real_records()["text"].tolist()
    sample = (sample * (-(-texts // len(sample))))[:texts]
    with tempfile.TemporaryDirectory(prefix="scale250k-model-") as home:
        embedder = make_embedder(settings_for(Path(home)))
        before = current_rss_mb()
        embedder.encode(sample[:8])  # load (and export, for ONNX) the model
        loaded = current_rss_mb()
        started = time.perf_counter()
        embedder.embed_documents(sample)
        seconds = time.perf_counter() - started
    return {
        "model_backend": embedder.active_backend,
        "model_texts": len(sample),
        "model_rss_before_load_mb": before,
        "model_rss_loaded_mb": loaded,
        "model_peak_rss_encoding_mb": peak_rss_mb(),
        "model_own_rss_mb": round(peak_rss_mb() - before, 1),
        "model_texts_per_s": round(len(sample) / seconds, 1),
    }


STANDIN_PROCESS = """
import json, resource, sys
from tests.pinecone_standin import PineconeStandIn
with PineconeStandIn() as standin:
    print(standin.url, standin.api_key, flush=True)
    sys.stdin.read()
print(json.dumps({"standin_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


@contextlib.contextmanager
def pinecone_standin() -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """The Pinecone stand-in in a process of its own, for the `with` block: the environment that points an
    ingest at it, and (filled in when the block ends) the stand-in's own peak RSS."""
    if not Path("tests/pinecone_standin.py").exists():
        raise SystemExit("--index pinecone runs the stand-in from tests/: run this script from the repository root")
    process = subprocess.Popen(
        [sys.executable, "-c", STANDIN_PROCESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    url, api_key = process.stdout.readline().split()
    env = {
        "PATIENTINSIGHT_INDEX_BACKEND": "pinecone",
        "PATIENTINSIGHT_PINECONE_HOST": url,
        "PATIENTINSIGHT_PINECONE_CONN_ID": "",  # no Airflow connection: the key from PINECONE_API_KEY
        "PINECONE_API_KEY": api_key,
    }
    found: dict[str, Any] = {}
    try:
        yield env, found
    finally:
        out, _ = process.communicate("", timeout=120)
        found.update(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})


def _child(args: list[str], extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one phase of this script in a fresh interpreter; its last stdout line is its JSON."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", **(extra_env or {})}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args], env=env, check=True, capture_output=True, text=True
    )
    result = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    # On stderr as each phase ends, so a phase that fails later loses no number.
    logging.getLogger("scale_250k").warning("phase %s done: %s", args[1], json.dumps(result))
    return result


def measure_250k(
    tmp: Path,
    records: int = 250_000,
    eval_max_queries: int | None = 100,
    index: str = "embedded",
    rerun_too: bool = True,
    corpus: str = "copies",
    update: int = 0,
) -> dict[str, Any]:
    """Generate, seed (stand-in vectors), re-run unchanged (real embedder), model memory: flat numbers.
    `index="pinecone"`: seed and re-run into the Pinecone stand-in, in a process of its own; no model phase.
    `update`: then that many new records of the realistic corpus, ingested into the published version."""
    if corpus == "realistic":
        source = realistic_source(tmp / f"realistic-{records}.csv", records)
    else:
        source = generate_source(tmp / f"generated-{records}.csv", records, linked=corpus == "linked")
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    eval_args = [] if eval_max_queries is None else ["--eval-max-queries", str(eval_max_queries)]
    standin: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if index == "pinecone":
            env, standin = stack.enter_context(pinecone_standin())
        seed = _child(["--phase", "seed", "--source", str(source), "--home", str(home), *eval_args], env)
        if not rerun_too:  # the first ingest's memory alone (--seed-only)
            return {"index": index, "generated_rows": records, "seed_s": seed["total_s"],
                    "seed_peak_rss_mb": seed["peak_rss_mb"], "seed_indexed": seed["indexed"],
                    "seed_vectors": seed["vectors"], **standin}  # fmt: skip
        rerun = _child(["--phase", "rerun", "--source", str(source), "--home", str(home)], env)
        updated: dict[str, Any] = {}
        if update:
            new = realistic_source(tmp / f"update-{update}.csv", update, start=records)
            updated = _child(["--phase", "update", "--source", str(new), "--home", str(home)], env)
    if rerun["embedded"] != 0:
        raise AssertionError(f"the unchanged re-run embedded {rerun['embedded']} records")
    model = _child(["--phase", "model", "--texts", "1000"]) if index == "embedded" else {}
    out: dict[str, Any] = {
        "index": index,
        "corpus": corpus,
        "generated_rows": records,
        "file_mb": round(source.stat().st_size / MB, 1),
        "stand_in_embedder": 1,  # the seed's vectors are random unit vectors, not the model's
        "seed_s": seed["total_s"],
        "seed_peak_rss_mb": seed["peak_rss_mb"],
        "seed_indexed": seed["indexed"],
        "seed_vectors": seed["vectors"],
        "seed_eval_max_queries": -1 if eval_max_queries is None else eval_max_queries,
        "rerun_s": rerun["total_s"],
        "rerun_peak_rss_mb": rerun["peak_rss_mb"],
        "rerun_embedded": rerun["embedded"],
        "rerun_unchanged": rerun["unchanged"],
        "rerun_index_records": rerun["index_records"],
        "rerun_same_version": int(rerun["version"] == seed["version"]),  # an unchanged re-run adds no version
        "rerun_eval_queries": rerun["eval_queries"],
    }
    if updated:
        out.update({
            "update_records": update, "update_s": updated["total_s"], "update_peak_rss_mb": updated["peak_rss_mb"],
            "update_embedded": updated["embedded"], "update_published": int(updated["published"]),
            "update_vectors": updated["vectors"], "update_vectors_written": updated["vectors_written"],
            "update_eval_queries": updated["eval_queries"],
        })  # fmt: skip
    phases = (("seed", seed), ("rerun", rerun), *((("update", updated),) if updated else ()))
    for phase, result in phases:
        for step, mark in result["steps"].items():
            out[f"{phase}_{step}_s"] = mark["s"]
            out[f"{phase}_{step}_peak_rss_mb"] = mark["peak_rss_mb"]
    out.update(model)
    out.update(standin)  # the stand-in's own peak: another process, not in the numbers above
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=250_000, help="generated records (default 250,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tmp", type=Path, default=None, help="work folder (default: a new one under /tmp)")
    parser.add_argument("--eval-max-queries", type=int, default=100, help="queries of the seed's evaluation")
    parser.add_argument(
        "--index", choices=["embedded", "pinecone"], default="embedded", help="where the vectors go (default embedded)"
    )
    parser.add_argument("--seed-only", action="store_true", help="only the first ingest (its peak memory)")
    parser.add_argument(
        "--corpus", choices=["copies", "linked", "realistic"], default="copies", help="the source (see above)"
    )
    parser.add_argument("--update", type=int, default=0, help="new realistic records ingested after the re-run")
    parser.add_argument("--phase", choices=["seed", "rerun", "update", "model"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.phase == "model":
        print(json.dumps(phase_model(args.texts)))
        return
    if args.phase in ("seed", "rerun", "update"):
        queries = args.eval_max_queries if args.phase == "seed" else None
        run_id = {"update": "update"}.get(args.phase)
        print(json.dumps(phase_ingest(args.source, args.home, args.phase == "seed", queries, run_id)))
        return
    with tempfile.TemporaryDirectory(prefix="scale250k-", dir=args.tmp) as name:
        result = {
            "machine": machine(),
            "date": stamp(),
            **measure_250k(
                Path(name),
                args.records,
                args.eval_max_queries,
                args.index,
                rerun_too=not args.seed_only,
                corpus=args.corpus,
                update=args.update,
            ),
        }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"# 250k ingest into the {result['index']} index: {result['generated_rows']} generated records; "
        f"{result['machine']}; {result['date']}\n"
    )
    print("Seed vectors come from a stand-in embedder (random unit vectors of the model's shape).\n")
    print("| number | value |\n|---|---:|")
    for key, value in result.items():
        if key not in ("machine", "date"):
            print(f"| {key} | {value} |")
    print(f"\n{json.dumps(result)}")


if __name__ == "__main__":
    main()
