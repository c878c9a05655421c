"""Airflow sensors of PatientInsight: a rolled-out service's readiness through its Service."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from patientinsight.rollout import readiness
from patientinsight.rollout.readiness import Readiness


def _key(context: Any) -> str:
    """The streak of this try only: the state store outlives a try (and a success), keyed by task, so a
    retried or cleared check must not inherit an old streak."""
    return f"readiness/try-{context['ti'].try_number}"


class ServiceReadySensor(BaseSensorOperator):
    """Done once GET <url>/readyz answered 200 twice in a row (readiness.CONSECUTIVE); fails with the
    last answer when `timeout` passes first. Returns the wait's numbers (seconds, probes) as its XCom.

    Each poke probes once. In reschedule mode (the default here) the worker slot is free between pokes
    and every poke runs in a new process, so the streak is kept in the task instance's state store,
    which a rescheduled poke reads and a retry starts afresh. Two ready answers in a row are thus two
    probes a poke interval apart, as a pod's own readiness probe counts them, and no sleep holds a worker.
    """

    template_fields = ("url",)

    def __init__(self, *, url: str, mode: str = "reschedule", **kwargs: Any) -> None:
        super().__init__(mode=mode, **kwargs)
        self.url = url

    def poke(self, context: Any) -> PokeReturnValue:
        store, key = context["task_state_store"], _key(context)
        seen = readiness.check(self.url, Readiness.from_dict(store.get(key)))
        store.set(key, seen.as_dict())
        return PokeReturnValue(seen.ready, seen.summary() if seen.ready else None)

    def execute(self, context: Any) -> Any:
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:  # say what the service answered, not only that time ran out
            seen = Readiness.from_dict(context["task_state_store"].get(_key(context)))
            raise AirflowSensorTimeout(
                f"{self.url}/readyz did not answer ready within {self.timeout:g}s "
                f"({seen.probes} checks, last: {seen.last})"
            ) from exc
