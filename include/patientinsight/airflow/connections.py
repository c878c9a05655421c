"""What the Airflow connections give the library: fsspec storage options for s3:// sources from the aws
connection (credentials, region, endpoint_url), and Pinecone's API key and host from its connection.
Each gives nothing when Airflow or the connection is absent: local paths; for Pinecone, the index's
client then reads PINECONE_API_KEY (index.pinecone_client)."""

from __future__ import annotations

import logging
from typing import Any

from patientinsight.index.pinecone_support import PineconeCredentials

log = logging.getLogger(__name__)


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


def pinecone_credentials(conn_id: str | None) -> PineconeCredentials:
    """API key and control-plane host from the Airflow connection when there is one, for
    index.factory.make_index; else none (then PINECONE_API_KEY, and the SDK reads
    PINECONE_CONTROLLER_HOST itself). Never logged."""
    if conn_id:
        try:
            from airflow.exceptions import AirflowNotFoundException
            from airflow.providers.pinecone.hooks.pinecone import PineconeHook
        except ImportError:
            log.info("Airflow's Pinecone provider is not installed: the API key comes from PINECONE_API_KEY")
        else:
            try:
                conn = PineconeHook(conn_id=conn_id).conn
            except AirflowNotFoundException:
                log.info("no Airflow connection %s: the API key comes from PINECONE_API_KEY", conn_id)
            else:
                if conn.password:
                    return PineconeCredentials(conn.password, conn.host or None)
    return PineconeCredentials()
