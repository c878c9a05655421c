"""The deployment step as an operator of the Airflow amazon provider: SageMakerEndpointOperator, told
whether to create or update by what SageMaker reports, and failing with SageMaker's FailureReason."""

from __future__ import annotations

import contextlib
import time
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

from patientinsight.llm.endpoint import decide, describe_endpoint, failure_message

_STARTED = "deploy_started"


class CreateOrUpdateEndpointOperator(SageMakerEndpointOperator):
    """Create the endpoint when missing, update it to the new config when live (SageMaker's blue/green
    update: the old fleet serves until the new one passes its health checks), then wait for InService,
    in the triggerer when deferrable. A retry that finds its own config deploying waits for it."""

    def __init__(self, *, config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config=config, operation="create", **kwargs)
        self._started_at = 0.0
        self._action = "create"

    def _names(self) -> tuple[str, str]:
        return self.config["EndpointName"], self.config["EndpointConfigName"]

    def _fail_if_failed(self) -> dict[str, Any]:
        name, _ = self._names()
        description = describe_endpoint(self.hook.conn, name)
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
        sagemaker = self.hook.conn
        current = describe_endpoint(sagemaker, name)
        action = decide(current, config_name)
        self.log.info("endpoint %s: %s (status %s)", name, action, current and current.get("EndpointStatus"))
        if action == "recreate":  # a Failed endpoint cannot be updated; it serves nothing, so replace it
            self.log.warning("endpoint %s is Failed: %s; deleting it", name, current and current.get("FailureReason"))
            sagemaker.delete_endpoint(EndpointName=name)
            sagemaker.get_waiter("endpoint_deleted").wait(
                EndpointName=name, WaiterConfig={"Delay": self.check_interval, "MaxAttempts": 120}
            )
            action = "create"
        self._action = action
        if context and "ti" in context:  # for the timing after a deferral (a resumed task keeps its XComs)
            context["ti"].xcom_push(key=_STARTED, value={"started_at": self._started_at, "action": action})
        if action == "done":
            return self._result(self._started_at, action)
        if action == "wait":
            return self._wait(name)
        if action == "update":
            autoscaling = AwsBaseHook(
                aws_conn_id=self.aws_conn_id, region_name=self.region_name, client_type="application-autoscaling"
            ).conn
            deregister(autoscaling, name)
            self.config = {k: v for k, v in self.config.items() if k != "Tags"}  # UpdateEndpoint takes no tags
        self.operation = action
        # The provider's waiter says only "terminal failure state"; _result raises with SageMaker's reason.
        with contextlib.suppress(WaiterError):
            super().execute(context)
        return self._result(self._started_at, action)

    def _wait(self, name: str) -> dict[str, Any]:
        if self.deferrable:
            self.defer(
                trigger=SageMakerTrigger(
                    job_name=name,
                    job_type="endpoint",
                    waiter_delay=self.check_interval,
                    aws_conn_id=self.aws_conn_id,
                    region_name=self.region_name,
                    verify=self.verify,
                    botocore_config=self.botocore_config,
                ),
                method_name="execute_complete",
            )
        with contextlib.suppress(WaiterError):
            self.hook.get_waiter("endpoint_in_service").wait(
                EndpointName=name, WaiterConfig={"Delay": self.check_interval, "MaxAttempts": 120}
            )
        return self._result(self._started_at, self._action)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back from the triggerer: whatever the event says, SageMaker's own description decides."""
        started = context["ti"].xcom_pull(task_ids=self.task_id, key=_STARTED) or {}
        return self._result(float(started.get("started_at") or time.time()), str(started.get("action", "create")))


def _exists(describe: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        describe(name)
        return True
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationException":
            return False
        raise


class CreateModelOnceOperator(SageMakerModelOperator):
    """SageMakerModelOperator that a retry can repeat: the deployment's model has a name of its own, so
    finding it means an earlier try made it."""

    def execute(self, context: Any) -> dict[str, Any]:
        if _exists(self.hook.describe_model, self.config["ModelName"]):
            self.log.info("model %s exists (an earlier try made it)", self.config["ModelName"])
            return {"Model": serialize(self.hook.describe_model(self.config["ModelName"]))}
        return dict(super().execute(context))


class CreateEndpointConfigOnceOperator(SageMakerEndpointConfigOperator):
    """SageMakerEndpointConfigOperator that a retry can repeat (see CreateModelOnceOperator)."""

    def execute(self, context: Any) -> dict[str, Any]:
        name = self.config["EndpointConfigName"]
        if _exists(self.hook.describe_endpoint_config, name):
            self.log.info("endpoint config %s exists (an earlier try made it)", name)
            return {"EndpointConfig": serialize(self.hook.describe_endpoint_config(name))}
        return dict(super().execute(context))
