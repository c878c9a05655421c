"""AWS Lambda handler: an object lands in the S3 intake prefix -> one run of the ingest DAG on it.

Standard library and boto3 only (both are in the Lambda Python runtime), so this folder zips alone.
Accepts S3 event notifications, the same wrapped in SQS messages (or SNS via SQS), and EventBridge
"Object Created" events. Triggers through the Airflow 3 REST API or Amazon MWAA (`invoke_rest_api`).
Configuration is by environment variables: see README.md beside this file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("lambda_trigger")
log.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
if not logging.getLogger().handlers:  # outside Lambda (which installs its own handler)
    logging.basicConfig(format="%(message)s")

DEFAULT_SUFFIXES = ".csv,.json,.jsonl,.gz"
MWAA_PATH_LIMIT = 64  # invoke_rest_api rejects longer paths
RUN_ID_MAX = 250  # Airflow's run_id column
TOKEN_REFRESH_MARGIN_S = 60.0  # fetch a new JWT this long before the cached one expires
SECRET_TTL_S = 300.0  # re-read the secret now and then, so a rotated password is picked up
MIN_REQUEST_S = 0.5  # no further attempt when less than this would be left for it


# --------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Config:
    dag_id: str = "patient_ingest"
    prefix: str = ""
    suffixes: tuple[str, ...] = tuple(DEFAULT_SUFFIXES.split(","))
    base_url: str | None = None
    username: str | None = None
    password: str | None = None
    secret_arn: str | None = None
    mwaa_env: str | None = None
    request_timeout_s: float = 10.0
    max_attempts: int = 8
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    deadline_margin_s: float = 2.0  # keep this much of the invocation for logging and the answer
    max_wait_s: float = 60.0  # retry budget when no Lambda context tells the remaining time

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        suffixes = env.get("S3_SUFFIXES", DEFAULT_SUFFIXES)
        config = cls(
            dag_id=env.get("DAG_ID", "patient_ingest"),
            prefix=env.get("S3_PREFIX", ""),
            suffixes=tuple(s.strip().lower() for s in suffixes.split(",") if s.strip()),
            base_url=(env.get("AIRFLOW_BASE_URL") or "").rstrip("/") or None,
            username=env.get("AIRFLOW_USERNAME") or None,
            password=env.get("AIRFLOW_PASSWORD") or None,
            secret_arn=env.get("AIRFLOW_SECRET_ARN") or None,
            mwaa_env=env.get("MWAA_ENV_NAME") or None,
            request_timeout_s=float(env.get("REQUEST_TIMEOUT_S", "10")),
            max_attempts=int(env.get("MAX_ATTEMPTS", "8")),
            backoff_base_s=float(env.get("BACKOFF_BASE_S", "0.5")),
            backoff_max_s=float(env.get("BACKOFF_MAX_S", "20")),
            max_wait_s=float(env.get("MAX_WAIT_S", "60")),
        )
        config.check()
        return config

    def check(self) -> None:
        """Fail at start-up with the variable to set, not at the first upload."""
        if self.mwaa_env:
            path = mwaa_trigger_path(self.dag_id)
            if len(path) > MWAA_PATH_LIMIT:
                raise ConfigError(f"MWAA path {path!r} is longer than {MWAA_PATH_LIMIT} characters: shorten DAG_ID")
            return
        if not self.base_url:
            raise ConfigError("set AIRFLOW_BASE_URL (Airflow REST API) or MWAA_ENV_NAME (Amazon MWAA)")
        if not self.secret_arn and not (self.username and self.password):
            raise ConfigError("set AIRFLOW_SECRET_ARN, or AIRFLOW_USERNAME and AIRFLOW_PASSWORD for development")


class ConfigError(ValueError):
    """The function's environment variables are wrong: nothing can be triggered."""


# ------------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None
    event_time: str | None
    sequencer: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def conf(self) -> dict[str, Any]:
        return {
            "source_uri": self.uri,
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
            "event_time": self.event_time,
        }


@dataclass
class Item:
    """One object notification, or a reason why the notification names no object to ingest."""

    obj: S3Object | None
    message_id: str | None = None  # the SQS message it came in, for batchItemFailures
    skip: str | None = None


class Malformed(ValueError):
    """A message that can never be triggered, however often it is delivered: it says which field is
    missing or of the wrong type, never a value."""


def _json_type(value: Any) -> str:
    """What a value is, for a reason that must not show the value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _at(data: Any, path: str, kind: type) -> Any:
    """data["a"]["b"] for the path "a.b", when it is of `kind`; Malformed otherwise."""
    value = data
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    if not isinstance(value, kind):
        raise Malformed(f"{path} is missing" if value is None else f"{path} is a JSON {_json_type(value)}")
    return value


def _optional(value: Any, kind: type) -> Any:
    """An optional field of an event: kept when it is of `kind`, else treated as absent."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def parse_event(event: Any) -> Iterator[Item]:
    """Every object notification in an invocation, whatever envelope it came in. Never raises on its
    input: a malformed record is skipped with the reason (retrying cannot mend it), and the records
    after it are still read."""
    if not isinstance(event, dict):
        yield Item(None, skip=f"malformed event: a JSON {_json_type(event)}, not an object")
        return
    if event.get("source") == "aws.s3" or "detail-type" in event:
        try:
            yield _from_eventbridge(event)
        except Malformed as exc:
            yield Item(None, skip=f"malformed EventBridge event: {exc}")
        return
    records = event.get("Records")
    if not isinstance(records, list):
        yield Item(None, skip=f"unknown event shape with keys {sorted(event)[:10]}")
        return
    for record in records:
        try:
            yield from _from_record(record)
        except Malformed as exc:
            yield Item(None, skip=f"malformed record: {exc}")


def _from_record(record: Any) -> Iterator[Item]:
    if not isinstance(record, dict):
        raise Malformed(f"a JSON {_json_type(record)}, not an object")
    source = record.get("eventSource") or record.get("EventSource")
    if source == "aws:sqs":
        yield from _from_sqs(record)
    elif source == "aws:s3":
        yield _from_s3_record(record)
    elif source == "aws:sns":
        yield from _from_body(_at(record, "Sns.Message", str), None)
    else:
        shown = source[:64] if isinstance(source, str) else f"a JSON {_json_type(source)}"
        yield Item(None, skip=f"unsupported event source {shown!r}")


def _from_sqs(record: Mapping[str, Any]) -> Iterator[Item]:
    message_id = _optional(record.get("messageId"), str)
    body = record.get("body")
    if not isinstance(body, str):
        yield Item(None, message_id, skip=f"malformed SQS message: body is a JSON {_json_type(body)}, not a string")
        return
    for item in _from_body(body, message_id):
        item.message_id = message_id
        yield item


def _from_body(body: str, message_id: str | None) -> Iterator[Item]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        yield Item(None, message_id, skip="message body is not JSON")
        return
    if isinstance(payload, dict) and payload.get("Type") == "Notification" and "Message" in payload:
        message = payload["Message"]
        if isinstance(message, str):
            yield from _from_body(message, message_id)  # SNS -> SQS fan-out
        else:
            yield Item(None, message_id, skip=f"malformed SNS notification: Message is a JSON {_json_type(message)}")
    elif isinstance(payload, dict) and payload.get("Event") == "s3:TestEvent":
        yield Item(None, message_id, skip="s3:TestEvent sent when the notification was configured")
    elif isinstance(payload, dict):
        yield from parse_event(payload)
    else:
        yield Item(None, message_id, skip="message body is not a JSON object")


def _from_s3_record(record: Mapping[str, Any]) -> Item:
    name = record.get("eventName", "")
    obj = _at(record, "s3.object", dict)
    found = S3Object(
        bucket=_at(record, "s3.bucket.name", str),
        key=urllib.parse.unquote_plus(_at(obj, "key", str)),  # S3 notifications URL-encode keys, '+' for space
        version_id=_optional(obj.get("versionId"), str) or None,
        etag=_optional(obj.get("eTag"), str) or None,
        size=_optional(obj.get("size"), int),
        event_time=_optional(record.get("eventTime"), str),
        sequencer=_optional(obj.get("sequencer"), str),
    )
    if not isinstance(name, str) or not name.startswith("ObjectCreated:"):
        shown = name[:64] if isinstance(name, str) else None
        return Item(found, skip=f"event {shown!r} is not an ObjectCreated event")
    return Item(found)


def _from_eventbridge(event: Mapping[str, Any]) -> Item:
    detail_type = event.get("detail-type")
    if event.get("source") != "aws.s3" or detail_type != "Object Created":
        source, kind = (v[:64] if isinstance(v, str) else None for v in (event.get("source"), detail_type))
        return Item(None, skip=f"EventBridge event {source!r}/{kind!r} is not Object Created")
    obj = _at(event, "detail.object", dict)
    return Item(
        S3Object(
            bucket=_at(event, "detail.bucket.name", str),
            key=_at(obj, "key", str),  # EventBridge sends keys as they are, not URL-encoded
            version_id=_optional(obj.get("version-id"), str) or None,
            etag=_optional(obj.get("etag"), str) or None,
            size=_optional(obj.get("size"), int),
            event_time=_optional(event.get("time"), str),
            sequencer=_optional(obj.get("sequencer"), str),
        )
    )


def skip_reason(obj: S3Object, config: Config) -> str | None:
    """Why an object is not ingested, or None when it is."""
    if obj.key.endswith("/"):
        return "folder marker"
    if not obj.key.startswith(config.prefix):
        return f"outside the prefix {config.prefix!r}"
    if config.suffixes and not obj.key.lower().endswith(config.suffixes):
        return f"suffix not one of {','.join(config.suffixes)}"
    if obj.size == 0:
        return "empty object"
    return None


def run_id_for(obj: S3Object) -> str:
    """Deterministic: a redelivered event makes the same run id, so Airflow answers 409, not a second run.
    Readable part first (for the UI), then a hash of everything that identifies this upload."""
    identity = "\0".join([obj.bucket, obj.key, obj.version_id or obj.etag or "", obj.sequencer or ""])
    digest = hashlib.sha256(identity.encode(errors="surrogatepass")).hexdigest()[:24]  # a lone \ud800 too
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{obj.bucket}/{obj.key}")
    readable = re.sub(r"\.{2,}", ".", readable)[:150]  # Airflow refuses '..' (path traversal)
    run_id = f"s3__{readable}__{digest}"
    assert len(run_id) <= RUN_ID_MAX
    return run_id


# ------------------------------------------------------------------------------------------ backends
@dataclass(frozen=True)
class Answer:
    status: int
    body: str


class Retryable(Exception):
    """A failure worth another try: a connection error, a timeout, 429 or 5xx."""


class TriggerError(RuntimeError):
    """A failure that another try will not fix; the message says what to do."""


class AuthError(TriggerError):
    """Airflow rejected the credentials: every object of the invocation would fail the same way."""


class Backend(Protocol):
    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout_s: float) -> Answer: ...


def _is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _http(method: str, url: str, body: dict[str, Any] | None, headers: dict[str, str], timeout_s: float) -> Answer:
    """One HTTP request; a connection error or timeout becomes Retryable, every answer an Answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return Answer(response.status, response.read().decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read().decode(errors="replace"))
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Retryable(f"{method} {url}: {type(reason).__name__}: {reason}") from exc


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (not verified: we only need to know when to fetch a new one)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, ValueError, TypeError):
        return None


@dataclass
class _Cached:
    value: Any
    expires_at: float


# Module-level: a warm Lambda container reuses the JWT and the secret across invocations.
_TOKENS: dict[tuple[str, str, str], _Cached] = {}
_SECRETS: dict[str, _Cached] = {}


def clear_caches() -> None:
    _TOKENS.clear()
    _SECRETS.clear()


def _read_secret(arn: str) -> tuple[str, str]:
    """username and password from a Secrets Manager secret holding JSON {"username", "password"}."""
    cached = _SECRETS.get(arn)
    if cached is None or cached.expires_at <= time.time():
        import boto3  # only here: the development path needs no AWS at all

        value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        secret = json.loads(value)
        cached = _Cached((secret["username"], secret["password"]), time.time() + SECRET_TTL_S)
        _SECRETS[arn] = cached
    return cached.value


@dataclass
class RestBackend:
    """Airflow 3 REST API: POST /auth/token for a JWT, then POST /api/v2/dags/{dag_id}/dagRuns."""

    base_url: str
    credentials: Callable[[], tuple[str, str]]
    forget_credentials: Callable[[], None] = field(default=lambda: None)

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout_s: float) -> Answer:
        url = f"{self.base_url}/api/v2/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        answer = _http("POST", url, body, {"Authorization": f"Bearer {self._token(timeout_s)}"}, timeout_s)
        if answer.status == 401:  # the cached token was revoked or the signing key rotated: one fresh token
            self._forget_token()
            answer = _http("POST", url, body, {"Authorization": f"Bearer {self._token(timeout_s)}"}, timeout_s)
        return answer

    def _token(self, timeout_s: float) -> str:
        username, password = self.credentials()
        # Keyed by the credentials too: a changed password never reuses a token of the old one.
        key = (self.base_url, username, hashlib.sha256(password.encode()).hexdigest()[:16])
        cached = _TOKENS.get(key)
        if cached and cached.expires_at - TOKEN_REFRESH_MARGIN_S > time.time():
            return cached.value
        token = self._login(timeout_s)
        _TOKENS[key] = _Cached(token, _jwt_expiry(token) or time.time() + 300)
        return token

    def _login(self, timeout_s: float) -> str:
        username, password = self.credentials()
        answer = _http(
            "POST", f"{self.base_url}/auth/token", {"username": username, "password": password}, {}, timeout_s
        )
        if answer.status in (401, 403):
            self.forget_credentials()  # a rotated secret is read afresh by the next invocation
            raise AuthError(
                f"Airflow at {self.base_url} rejected the credentials of user {username!r} "
                f"(HTTP {answer.status}: {_short(answer.body)}); check AIRFLOW_SECRET_ARN or AIRFLOW_PASSWORD"
            )
        if _is_retryable(answer.status):
            raise Retryable(f"POST {self.base_url}/auth/token: HTTP {answer.status}: {_short(answer.body)}")
        if answer.status not in (200, 201):
            raise TriggerError(f"POST {self.base_url}/auth/token: HTTP {answer.status}: {_short(answer.body)}")
        return str(json.loads(answer.body)["access_token"])

    def _forget_token(self) -> None:
        for key in [k for k in _TOKENS if k[0] == self.base_url]:
            del _TOKENS[key]


def mwaa_trigger_path(dag_id: str) -> str:
    return f"/dags/{urllib.parse.quote(dag_id, safe='')}/dagRuns"


@dataclass
class MwaaBackend:
    """Amazon MWAA: the same REST call through boto3 mwaa.invoke_rest_api (IAM auth, no password)."""

    env_name: str
    client: Any = None

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any], timeout_s: float) -> Answer:
        from botocore.exceptions import BotoCoreError, ClientError  # boto3 is in the Lambda runtime

        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        try:
            response = self._client(timeout_s).invoke_rest_api(
                Name=self.env_name, Path=mwaa_trigger_path(dag_id), Method="POST", Body=body
            )
        except ClientError as exc:
            error = exc.response
            status = error.get("RestApiStatusCode") or error.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
            answer = error.get("RestApiResponse") or error.get("Error", {})
            return Answer(int(status), json.dumps(answer, default=str))
        except BotoCoreError as exc:  # endpoint unreachable, read timeout
            raise Retryable(f"MWAA {self.env_name}: {type(exc).__name__}: {exc}") from exc
        return Answer(int(response["RestApiStatusCode"]), json.dumps(response.get("RestApiResponse"), default=str))

    def _client(self, timeout_s: float) -> Any:
        if self.client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            # Our own loop retries with the invocation's deadline in mind; botocore's would not.
            boto_config = BotoConfig(retries={"max_attempts": 1}, connect_timeout=timeout_s, read_timeout=timeout_s)
            self.client = boto3.client("mwaa", config=boto_config)
        return self.client


def make_backend(config: Config) -> Backend:
    if config.mwaa_env:
        return MwaaBackend(config.mwaa_env)
    assert config.base_url is not None  # Config.check
    if config.secret_arn:
        arn = config.secret_arn

        def forget() -> None:
            _SECRETS.pop(arn, None)

        return RestBackend(config.base_url, lambda: _read_secret(arn), forget)
    username, password = config.username or "", config.password or ""
    return RestBackend(config.base_url, lambda: (username, password))


# ------------------------------------------------------------------------------------------ triggering
def _short(body: str, limit: int = 300) -> str:
    """Airflow's answer for a message: its `detail` when it has one, cut to a readable length."""
    try:
        detail = json.loads(body).get("detail", body)
    except (json.JSONDecodeError, AttributeError):
        detail = body
    text = detail if isinstance(detail, str) else json.dumps(detail)
    return text[:limit]


def _emit(level: int, outcome: str, **fields: Any) -> None:
    """One JSON line per decision: object, run id, outcome. Never file contents."""
    log.log(level, json.dumps({"outcome": outcome, **fields}, default=str))


@dataclass
class Deadline:
    """The invocation's remaining time (from the Lambda context), less a margin for the answer."""

    remaining_s: Callable[[], float]
    margin_s: float

    @classmethod
    def of(cls, context: Any, config: Config) -> Deadline:
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            return cls(lambda: context.get_remaining_time_in_millis() / 1000.0, config.deadline_margin_s)
        end = time.monotonic() + config.max_wait_s
        return cls(lambda: end - time.monotonic(), config.deadline_margin_s)

    def left(self) -> float:
        return self.remaining_s() - self.margin_s


def trigger(obj: S3Object, config: Config, backend: Backend, deadline: Deadline) -> str:
    """Create the run for one object: 'triggered', or 'duplicate' when Airflow already has it.
    Retries connection errors, 429 and 5xx with exponential backoff and full jitter while time is left."""
    run_id = run_id_for(obj)
    attempt = 0
    while True:
        attempt += 1
        timeout_s = min(config.request_timeout_s, max(deadline.left(), MIN_REQUEST_S))
        try:
            answer = backend.trigger(config.dag_id, run_id, obj.conf(), timeout_s)
            if _is_retryable(answer.status):
                raise Retryable(f"HTTP {answer.status}: {_short(answer.body)}")
        except Retryable as exc:
            delay = random.uniform(0, min(config.backoff_max_s, config.backoff_base_s * 2 ** (attempt - 1)))
            if attempt >= config.max_attempts or deadline.left() - delay < MIN_REQUEST_S:
                raise TriggerError(
                    f"could not trigger DAG {config.dag_id!r} for {obj.uri} (run {run_id}): Airflow unreachable "
                    f"or failing after {attempt} attempts; last error: {exc}"
                ) from exc
            _emit(
                logging.WARNING,
                "retry",
                uri=obj.uri,
                run_id=run_id,
                attempt=attempt,
                delay_s=round(delay, 3),
                error=str(exc),
            )
            time.sleep(delay)
            continue
        if answer.status in (200, 201):
            return "triggered"
        if answer.status == 409:
            return "duplicate"  # this object's run exists already: a redelivery, and a success
        raise TriggerError(
            f"Airflow refused to trigger DAG {config.dag_id!r} for {obj.uri} (run {run_id}): "
            f"HTTP {answer.status}: {_short(answer.body)}"
        )


def process(event: Any, config: Config, backend: Backend, deadline: Deadline) -> dict[str, Any]:
    """Trigger every object of the event; the SQS messages that failed go to batchItemFailures."""
    results: dict[str, int] = {"triggered": 0, "duplicate": 0, "skipped": 0, "failed": 0}
    failed_messages: list[str] = []
    errors: list[Exception] = []
    auth_error: AuthError | None = None
    for item in parse_event(event):
        outcome, error = _process_item(item, config, backend, deadline, auth_error)
        results[outcome] += 1
        if isinstance(error, AuthError):
            auth_error = error  # the rest fail at once: no login storm with a wrong password
        if error is not None:
            errors.append(error)
            if item.message_id and item.message_id not in failed_messages:
                failed_messages.append(item.message_id)
    summary: dict[str, Any] = {**results}
    if failed_messages or _is_sqs(event):
        summary["batchItemFailures"] = [{"itemIdentifier": m} for m in failed_messages]
    elif errors:
        # A direct (asynchronous) invocation: raising makes Lambda retry it, then send it to the DLQ.
        raise errors[0] if len(errors) == 1 else TriggerError("; ".join(map(str, errors)))
    return summary


def _process_item(
    item: Item, config: Config, backend: Backend, deadline: Deadline, auth_error: AuthError | None
) -> tuple[str, Exception | None]:
    obj = item.obj
    reason = item.skip or (skip_reason(obj, config) if obj else "no object")
    fields = {"uri": obj.uri if obj else None, "message_id": item.message_id}
    if reason:
        _emit(logging.INFO, "skipped", **fields, reason=reason)
        return "skipped", None
    assert obj is not None
    run_id = run_id_for(obj)
    try:
        if auth_error is not None:
            raise auth_error
        outcome = trigger(obj, config, backend, deadline)
    except TriggerError as exc:
        _emit(logging.ERROR, "failed", **fields, run_id=run_id, dag_id=config.dag_id, error=str(exc))
        return "failed", exc
    _emit(logging.INFO, outcome, **fields, run_id=run_id, dag_id=config.dag_id, size=obj.size)
    return outcome, None


def _is_sqs(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return isinstance(records, list) and any(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    config = Config.from_env()
    return process(event, config, make_backend(config), Deadline.of(context, config))
