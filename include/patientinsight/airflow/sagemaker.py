"""The deployment step as operators of the Airflow amazon provider: SageMakerEndpointOperator, told
whether to create or update by what SageMaker reports, and failing with SageMaker's FailureReason."""

from __future__ import annotations

import contextlib
import math
import time
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointConfigOperator,
    SageMakerEndpointOperator,
    SageMakerModelOperator,
    serialize,
)
from airflow.providers.amazon.aws.triggers.sagemaker import SageMakerTrigger
from airflow.sdk.exceptions import AirflowFailException
from botocore.exceptions import WaiterError

from patientinsight.llm.autoscaling import deregister
from patientinsight.llm.endpoint import deploy_action, described, failure_message

_STARTED = "deploy_started"


class CreateOrUpdateEndpointOperator(SageMakerEndpointOperator):
    """Create the endpoint when missing, update it to the new config when live (SageMaker's blue/green
    update: the old fleet serves until the new one passes its health checks), then wait for InService,
    in the triggerer when deferrable. A retry that finds its own config deploying waits for it. Every
    wait polls every `check_interval` seconds for at most `max_ingestion_time` seconds."""

    def __init__(self, *, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config=config, operation="create", **kwargs)
        self._started_at = 0.0
        self._action = "create"

    def _names(self) -> tuple[str, str]:
        return self.config["EndpointName"], self.config["EndpointConfigName"]

    def _polls(self) -> int:
        return max(1, math.ceil(self.max_ingestion_time / self.check_interval))

    def _fail_if_failed(self) -> dict[str, Any]:
        name, _ = self._names()
        description = described(self.hook.describe_endpoint, name)
        if description is None:
            raise AirflowFailException(f"SageMaker endpoint {name} disappeared while deploying")
        if description["EndpointStatus"] != "InService":
            raise AirflowFailException(failure_message(description))
        return description

    def _result(self, started_at: float, action: str) -> dict[str, Any]:
        description = self._fail_if_failed()
        return {
            "endpoint_name": description["EndpointName"],
            "endpoint_arn": description["EndpointArn"],
            "endpoint_status": description["EndpointStatus"],
            "endpoint_config_name": description["EndpointConfigName"],
            "action": action,
            "deploy_seconds": round(time.time() - started_at, 3),
        }

    def execute(self, context: Any) -> dict[str, Any]:
        self._started_at = time.time()
        name, config_name = self._names()
        current = described(self.hook.describe_endpoint, name)
        action = deploy_action(current, config_name)
        self.log.info("endpoint %s: %s (status %s)", name, action, current and current.get("EndpointStatus"))
        if action == "recreate":  # a Failed endpoint cannot be updated; it serves nothing, so replace it
            self.log.warning("endpoint %s is Failed: %s; deleting it", name, current and current.get("FailureReason"))
            # SageMakerHook has no delete_endpoint: this is the operator's one call past the hook's methods.
            self.hook.conn.delete_endpoint(EndpointName=name)
            self.hook.get_waiter("endpoint_deleted").wait(
                EndpointName=name, WaiterConfig={"Delay": self.check_interval, "MaxAttempts": self._polls()}
            )
            action = "create"
        self._action = action
        if context and "ti" in context:  # for the timing after a deferral (a resumed task keeps its XComs)
            context["ti"].xcom_push(key=_STARTED, value={"started_at": self._started_at, "action": action})
        if action == "done":
            return self._result(self._started_at, action)
        if action == "update":
            # Application Auto Scaling has no provider hook: a plain client from the same connection.
            autoscaling = AwsBaseHook(
                aws_conn_id=self.aws_conn_id, region_name=self.region_name, client_type="application-autoscaling"
            ).conn
            deregister(autoscaling, name)
            update = {k: v for k, v in self.config.items() if k != "Tags"}  # UpdateEndpoint takes no tags
            self.hook.update_endpoint(update, wait_for_completion=False)
        elif action == "create":
            self.hook.create_endpoint(self.config, wait_for_completion=False)
        return self._wait(name)  # "wait": an earlier try started the change

    def _wait(self, name: str) -> dict[str, Any]:
        if self.deferrable:
            self.defer(
                trigger=SageMakerTrigger(
                    job_name=name,
                    job_type="endpoint",
                    waiter_delay=self.check_interval,
                    waiter_max_attempts=self._polls(),
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
                # A backstop just past the trigger's last poll, so that the trigger ends first and
                # execute_complete fails with SageMaker's own description.
                timeout=timedelta(seconds=self.max_ingestion_time + 2 * self.check_interval),
            )
        # The waiter says only "terminal failure state" or "max attempts"; _result raises with SageMaker's reason.
        with contextlib.suppress(WaiterError):
            self.hook.get_waiter("endpoint_in_service").wait(
                EndpointName=name, WaiterConfig={"Delay": self.check_interval, "MaxAttempts": self._polls()}
            )
        return self._result(self._started_at, self._action)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: whatever the event says, SageMaker's own description decides."""
        started = context["ti"].xcom_pull(task_ids=self.task_id, key=_STARTED) or {}
        return self._result(float(started.get("started_at") or time.time()), str(started.get("action", "create")))


class CreateModelOnceOperator(SageMakerModelOperator):
    """SageMakerModelOperator that a retry can repeat: the deployment's model has a name of its own, so
    finding it means an earlier try made it."""

    def execute(self, context: Any) -> dict[str, Any]:
        found = described(self.hook.describe_model, self.config["ModelName"])
        if found is not None:
            self.log.info("model %s exists (an earlier try made it)", self.config["ModelName"])
            return {"Model": serialize(found)}
        return dict(super().execute(context))


class CreateEndpointConfigOnceOperator(SageMakerEndpointConfigOperator):
    """SageMakerEndpointConfigOperator that a retry can repeat (see CreateModelOnceOperator)."""

    def execute(self, context: Any) -> dict[str, Any]:
        name = self.config["EndpointConfigName"]
        found = described(self.hook.describe_endpoint_config, name)
        if found is not None:
            self.log.info("endpoint config %s exists (an earlier try made it)", name)
            return {"EndpointConfig": serialize(found)}
        return dict(super().execute(context))
