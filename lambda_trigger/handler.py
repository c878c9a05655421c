"""AWS Lambda handler: an object lands in the S3 intake prefix -> one run of the ingest DAG on it.

Standard library and boto3 only (both are in the Lambda Python runtime), so this folder zips alone; its
modules sit at the zip's root and import each other by their plain names. Accepts S3 event
notifications, the same wrapped in SQS messages (or SNS via SQS), and EventBridge "Object Created"
events (events.py). Triggers through the Airflow 3 REST API (airflow_rest.py) or Amazon MWAA
(`invoke_rest_api`, mwaa.py), retrying within the invocation's time (triggering.py). Configuration is by
environment variables (config.py): see README.md beside this file.
"""

from __future__ import annotations

from typing import Any

from backends import make_backend
from config import Config
from triggering import Deadline, process


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = Config.from_env()
    return process(event, config, make_backend(config), Deadline.of(context, config))
