"""The whole ingest without a scheduler (the command line's path), on the synthetic sample."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patientinsight import cli
from patientinsight.embedding.encoder import make_embedder
from patientinsight.index.factory import make_index
from patientinsight.ingest import run
from patientinsight.ingest.run import run_ingest
from patientinsight.ingest.steps import QuarantineExceeded
from patientinsight.retrieval.searcher import RETRIEVERS
from patientinsight.settings import Settings
from patientinsight.tracking import LINK_XCOM_KEY
from tests.helpers import changed_and_removed, mlflow_run, read_rows, scrambled, write_rows


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def test_ingest_sample_then_rerun_then_change(settings: Settings, sample_csv: Path, tmp_path: Path) -> None:
    first = run_ingest(str(sample_csv), settings, run_id="first")
    rows = len(read_rows(sample_csv))
    assert first["read"] == rows == first["indexed"] + first["quarantined"]
    assert first["quarantined"] == 1 and first["embedded"] == first["indexed"]
    run_dir = Path(first["report_dir"])
    for name in ("validation.json", "quarantine.jsonl", "profile.html", "profile.json", "report.json"):
        assert (run_dir / name).stat().st_size > 0, name
    (entry,) = [json.loads(line) for line in (run_dir / "quarantine.jsonl").open()]
    assert entry["row"] == rows and entry["errors"][0]["field"] == "patient_uid"

    index = make_index(settings)
    assert index.published() == first["index_version"]
    reader = index.open(first["index_version"])
    assert reader.count() == first["indexed"]
    query = make_embedder(settings).embed_query(
        "crushing chest pain with ST elevation, treated with coronary intervention"
    )
    top = reader.records([h.uid for h in reader.search(query, 3)])
    assert top["title"].str.contains("myocardial infarction", case=False).all()

    run = mlflow_run(settings.tracking_uri, first["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith((settings.home / "mlartifacts").as_uri())  # not in the cwd
    assert run.data.params["source_uri"] == str(sample_csv)
    assert run.data.metrics["validate_read"] == rows
    assert run.data.metrics["eval_own_short_mrr"] > 0.5 and "eval_own_full_mrr" in run.data.metrics

    second = run_ingest(str(sample_csv), settings, run_id="second")
    assert (second["embedded"], second["unchanged"]) == (0, first["indexed"])
    assert second["index_version"] == first["index_version"]

    edited, changed, removed = changed_and_removed(sample_csv, tmp_path / "edited.csv")
    # A change alone does not trip the gate; on this 47-record sample there are too few shared
    # queries to judge, and the report says so.
    third = run_ingest(str(edited), settings, full_refresh=True, run_id="third")
    assert third["gate"]["skipped"] and third["gate"]["reason"].startswith("gate skipped: too few queries")
    assert third["published"] and third["index_version"] == third["staged_version"]
    assert (third["embedded"], third["deleted"], third["unchanged"]) == (1, 1, first["indexed"] - 2)
    reader = make_index(settings).open(third["index_version"])
    hashes = reader.hashes()
    assert removed not in hashes and changed in hashes and reader.count() == first["indexed"] - 1


def test_the_command_line_runs_the_steps_in_order(
    settings: Settings, sample_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_ingest calls the DAG's step functions in ORDER (tests/dags checks that the DAG allows it)."""
    called: list[str] = []
    for step in run.ORDER:
        original = getattr(run, step)

        def recorded(*args: object, _step: str = step, _f: Any = original, **kwargs: object) -> Any:
            called.append(_step)
            return _f(*args, **kwargs)

        monkeypatch.setattr(run, step, recorded)
    run_ingest(str(sample_csv), settings, limit=10, run_id="ordered")
    assert [step for i, step in enumerate(called) if i == 0 or called[i - 1] != step] == list(run.ORDER)


def test_one_ingest_builds_one_embedder(sample_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan, every shard, the build and the evaluation share one embedder: one runtime started."""
    settings = Settings(home=tmp_path / "home", embed_shard_size=4)
    built: list[Any] = []

    def counted(s: Settings) -> Any:
        built.append(make_embedder(s))
        return built[-1]

    monkeypatch.setattr(run, "_embedders", {})
    monkeypatch.setattr(run, "make_embedder", counted)
    report = run_ingest(str(sample_csv), settings, limit=10, run_id="one-embedder")
    assert len(json.loads(Path(report["report_dir"], "shards.json").read_text())["shards"]) == 3
    assert len(built) == 1


def test_the_state_is_typed_json(settings: Settings, sample_csv: Path) -> None:
    """The state crosses Airflow's XCom as JSON, with the MLflow link under the key the plugin reads."""
    state = run.begin(settings, "typed", {"source_uri": str(sample_csv)})
    assert json.loads(json.dumps(state)) == state
    assert set(state) == set(run.State.__annotations__) and LINK_XCOM_KEY in state


def test_a_held_version_is_published_only_when_allowed(sample_csv: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", gate_min_queries=10)  # judge on the sample's 20 queries
    first = run_ingest(str(sample_csv), settings, run_id="first")
    worse = scrambled(sample_csv, tmp_path / "scrambled.csv")
    held = run_ingest(str(worse), settings, full_refresh=True, run_id="held")
    assert held["gate"]["needs_approval"] and not held["published"], held["gate"]
    assert "MRR fell" in held["gate"]["reason"]
    assert held["index_version"] == first["index_version"] != held["staged_version"]
    allowed = run_ingest(str(worse), settings, full_refresh=True, run_id="allowed", allow_worse=True)
    assert allowed["published"] and allowed["index_version"] == allowed["staged_version"]


def test_without_full_refresh_nothing_is_deleted(settings: Settings, sample_csv: Path, tmp_path: Path) -> None:
    run_ingest(str(sample_csv), settings, run_id="a")
    edited, _, removed = changed_and_removed(sample_csv, tmp_path / "edited.csv")
    report = run_ingest(str(edited), settings, run_id="b")
    assert report["deleted"] == 0
    assert removed in make_index(settings).open(report["index_version"]).hashes()


def test_too_many_bad_rows_fail_and_publish_nothing(settings: Settings, sample_csv: Path, tmp_path: Path) -> None:
    rows = read_rows(sample_csv)
    for r in rows[:5]:
        r["gender"] = "unknown"
    bad = write_rows(tmp_path / "bad.csv", rows)
    with pytest.raises(QuarantineExceeded, match=r"bad\.csv: 5 of \d+ rows quarantined"):
        run_ingest(str(bad), settings, run_id="bad")
    assert make_index(settings).published() is None
    entries = [json.loads(line) for line in (settings.runs_dir / "bad" / "quarantine.jsonl").open()]
    # row 4 fails on sex, so its later duplicate (the last row) is the first valid copy and is kept
    assert [e["row"] for e in entries] == [1, 2, 3, 4, 5]


def test_cli_json(
    settings: Settings, sample_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"index_version": None, "records": 0}
    assert cli.main(["ingest", str(sample_csv), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = {
        "read",
        "indexed",
        "quarantined",
        "embedded",
        "unchanged",
        "deleted",
        "index_version",
        "report_dir",
    }
    assert expected <= report.keys()
    assert cli.main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["index_version"] == report["index_version"] and status["records"] == report["indexed"]
    assert cli.main(["eval", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(r["retriever"], r["queries_mode"]) for r in rows} == {
        (r, m) for r in RETRIEVERS for m in ("short", "full")
    }
    assert {r["protocol"] for r in rows} == {"leave_one_out"}
    assert all({"mrr", "p@10", "ndcg@10", "recall@100", "queries"} <= r.keys() for r in rows)
    assert [r["retriever"] for r in rows if r["default"]] == [settings.retriever] * 2
    assert cli.main(["eval", "--retriever", "lexical", "--queries", "short", "--by-group", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(group.startswith("age=") for group in row["by_group"])
    assert cli.main(["ingest", str(sample_csv.with_name("missing.csv")), "--json"]) == 1
