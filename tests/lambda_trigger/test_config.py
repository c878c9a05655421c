"""config.py: configuration errors name the variable; the default suffixes and template.yaml's S3 filters are
the formats ingest reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from config import DEFAULT_SUFFIXES, Config, ConfigError

from patientinsight.ingest.formats import trigger_suffixes


def test_configuration_errors_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIRFLOW_BASE_URL", "AIRFLOW_SECRET_ARN", "AIRFLOW_USERNAME", "AIRFLOW_PASSWORD", "MWAA_ENV_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="AIRFLOW_BASE_URL"):
        Config.from_env()
    with pytest.raises(ConfigError, match="AIRFLOW_SECRET_ARN"):
        Config.from_env({"AIRFLOW_BASE_URL": "http://x"})
    for no_scheme in ("airflow.example.org", "ftp://airflow.example.org", "https://"):
        with pytest.raises(ConfigError, match=r"AIRFLOW_BASE_URL .* is not an http\(s\) URL"):
            Config.from_env({"AIRFLOW_BASE_URL": no_scheme, "AIRFLOW_SECRET_ARN": "arn:aws:secretsmanager:x"})
    with pytest.raises(ConfigError, match="longer than 64"):
        Config.from_env({"MWAA_ENV_NAME": "env", "DAG_ID": "d" * 60})
    config = Config.from_env({"MWAA_ENV_NAME": "env", "S3_SUFFIXES": " .CSV, .Json ,"})
    assert config.suffixes == (".csv", ".json")


def _template(repo_root: Path) -> dict[str, Any]:
    """template.yaml, its CloudFormation tags (!Ref, !If, ...) read as plain values."""

    class Loader(yaml.SafeLoader):
        pass

    def untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_scalar(node)  # type: ignore[arg-type]

    Loader.add_multi_constructor("!", untagged)
    return yaml.load((repo_root / "lambda_trigger" / "template.yaml").read_text(), Loader=Loader)


def test_default_suffixes_and_template_filters_are_the_formats_ingest_reads(repo_root: Path) -> None:
    """lambda_trigger/ imports nothing of the project, so it names the formats again: here they must agree."""
    accepted = set(trigger_suffixes())
    assert set(DEFAULT_SUFFIXES.split(",")) == accepted
    assert set(Config().suffixes) == accepted == set(Config.from_env({"MWAA_ENV_NAME": "env"}).suffixes)

    function = _template(repo_root)["Resources"]["TriggerFunction"]["Properties"]
    assert set(function["Environment"]["Variables"]["S3_SUFFIXES"].split(",")) == accepted
    filtered = []
    for event in function["Events"].values():
        rules = {rule["Name"]: rule["Value"] for rule in event["Properties"]["Filter"]["S3Key"]["Rules"]}
        filtered.append(rules["suffix"])
    assert sorted(filtered) == sorted(accepted)  # one notification per suffix, none twice
