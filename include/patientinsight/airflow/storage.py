"""fsspec storage options for s3:// sources, from the Airflow aws connection (credentials, region,
endpoint_url), so a DAG reads S3 exactly as its connection says. Local paths need none."""

from __future__ import annotations

from typing import Any


def storage_options_for(uri: str, aws_conn_id: str | None) -> dict[str, Any]:
    if not uri.startswith(("s3://", "s3a://")) or not aws_conn_id:
        return {}
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # only inside Airflow, only for S3

    hook = S3Hook(aws_conn_id=aws_conn_id)
    credentials = hook.get_credentials()
    client_kwargs: dict[str, Any] = {}
    if hook.conn_region_name:
        client_kwargs["region_name"] = hook.conn_region_name
    endpoint = hook.conn_config.endpoint_url
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    return {
        "key": credentials.access_key,
        "secret": credentials.secret_key,
        "token": credentials.token,
        "client_kwargs": client_kwargs,
    }
