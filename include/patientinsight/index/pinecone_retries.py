"""The one retry layer of every Pinecone call: tenacity around each operation, with the SDK's own
retries switched off.

Why one layer, and why this one. The SDK (10.2.0) retries each HTTP request itself: 3 retries on
408/429/5xx and connection errors, honouring Retry-After, gated by a per-host retry budget. Stacked
under a retry loop of our own, the attempts multiplied (`max_retries=5` meant up to 24 requests per
batch) and `pinecone_max_retries` did not say how many requests a batch may cost. The SDK's layer
cannot replace ours either: its data-plane client takes no retry settings (always 3 retries), too
few to carry an ingest through a throttling burst. So the SDK's retries are off, on the control
plane through its public `retry_config`, on the data plane by setting the same config on its
transport (`disable_sdk_retries`; a contract test counts requests to check it), and each operation is
tried `max_retries + 1` times here:

- only transient failures are retried: 408, 429 and 5xx answers, connection errors and timeouts;
  any other error (401, 404, a bad request) fails at once;
- the wait grows exponentially with full jitter (`backoff_s`, doubled per attempt, capped at
  MAX_WAIT_S), and is never shorter than the Retry-After the server asked for;
- a call that still fails raises PineconeIndexError naming the operation and the attempts, with the
  last error as its cause.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from patientinsight.index.pinecone_support import PineconeIndexError

if TYPE_CHECKING:
    from pinecone import RetryConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_WAIT_S = 60.0  # the longest wait between attempts, Retry-After included (the SDK's own cap)


def no_sdk_retries() -> RetryConfig:
    """The SDK's retry policy for our clients: none (see the module docstring)."""
    from pinecone import RetryConfig

    return RetryConfig(max_retries=0)


def disable_sdk_retries(data_plane: Any) -> None:
    """Switch off the retries of a data-plane client, which takes no retry settings of its own: its
    transport holds the policy. Should a later SDK move it, say so rather than fail: the attempts
    would multiply again, and the request-counting contract test shows it."""
    transport = getattr(getattr(getattr(data_plane, "_http", None), "_client", None), "_transport", None)
    if transport is None or not hasattr(transport, "_config"):
        log.warning("could not switch off the Pinecone SDK's data-plane retries: attempts may multiply")
        return
    transport._config = no_sdk_retries()


def is_retryable(exc: BaseException) -> bool:
    from pinecone.errors.exceptions import ApiError, PineconeConnectionError, PineconeTimeoutError

    if isinstance(exc, (PineconeConnectionError, PineconeTimeoutError)):
        return True
    return isinstance(exc, ApiError) and (exc.status_code in (408, 429) or exc.status_code >= 500)


def _retry_after(exc: BaseException | None) -> float:
    """The wait a 429 or 503 asked for (Retry-After, in seconds), 0 when none."""
    headers = getattr(exc, "headers", None) or {}
    try:
        return min(max(float(headers.get("retry-after", 0)), 0.0), MAX_WAIT_S)
    except (TypeError, ValueError):  # an HTTP date, or garbage: back off as usual
        return 0.0


def _wait(backoff_s: float) -> Callable[[RetryCallState], float]:
    jittered = wait_random_exponential(multiplier=backoff_s, max=MAX_WAIT_S)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return max(jittered(state), _retry_after(error))

    return wait


def with_retries(call: Callable[[], T], what: str, max_retries: int, backoff_s: float) -> T:
    """`call()`, tried up to `max_retries + 1` times (see the module docstring); PineconeIndexError
    naming `what` when it fails for good."""

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s: %s; retry %d/%d in %.2fs", what, type(error).__name__, state.attempt_number, max_retries, delay
        )

    retrying = Retrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=_wait(backoff_s),
        retry=retry_if_exception(is_retryable),
        before_sleep=log_retry,
        reraise=True,  # the last error itself, not tenacity's RetryError: it becomes the cause below
    )
    try:
        return retrying(call)
    except Exception as exc:
        attempts = int(retrying.statistics.get("attempt_number", 1))
        raise PineconeIndexError(f"{what} failed after {attempts} attempt(s): {exc}") from exc
