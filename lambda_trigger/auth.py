"""The REST backend's credentials: the Secrets Manager secret and the JWTs, cached for a warm container."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

TOKEN_REFRESH_MARGIN_S = 60.0  # fetch a new JWT this long before the cached one expires
SECRET_TTL_S = 300.0  # re-read the secret now and then, so a rotated password is picked up


def jwt_expiry(token: str) -> float | None:
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


def read_secret(arn: str) -> tuple[str, str]:
    """username and password from a Secrets Manager secret holding JSON {"username", "password"}."""
    cached = _SECRETS.get(arn)
    if cached is None or cached.expires_at <= time.time():
        import boto3  # only here: the development path needs no AWS at all

        value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        secret = json.loads(value)
        cached = _Cached((secret["username"], secret["password"]), time.time() + SECRET_TTL_S)
        _SECRETS[arn] = cached
    return cached.value


def forget_secret(arn: str) -> None:
    _SECRETS.pop(arn, None)


def cached_token(key: tuple[str, str, str]) -> str | None:
    """The token cached for (base URL, user, password hash), unless it expires within the margin."""
    cached = _TOKENS.get(key)
    if cached and cached.expires_at - TOKEN_REFRESH_MARGIN_S > time.time():
        return str(cached.value)
    return None


def keep_token(key: tuple[str, str, str], token: str) -> None:
    _TOKENS[key] = _Cached(token, jwt_expiry(token) or time.time() + 300)


def forget_tokens(base_url: str) -> None:
    for key in [k for k in _TOKENS if k[0] == base_url]:
        del _TOKENS[key]
