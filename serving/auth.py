"""API keys: configured as SHA-256 hashes, compared in constant time; none needed on loopback in dev mode."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import sys
from collections.abc import Mapping
from typing import Any

# Where serving.protocol puts the address the server listens on: the ASGI scope's "server" is the local
# address of the connection, which is 127.0.0.1 for a local client even when the service listens on 0.0.0.0.
BIND_HOST = "patientinsight.bind_host"

# API keys are random 32-byte tokens, so a plain SHA-256 suffices (no password-style stretching needed).


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """'id:sha256hex,id2:sha256hex' -> [(id, digest)]; a malformed entry is an error, not a silent skip."""
    keys = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        key_id, sep, digest = entry.partition(":")
        if not sep or len(digest) != 64:
            raise ValueError("PATIENTINSIGHT_API_KEYS entries are 'key_id:sha256_hex' (64 hex digits)")
        keys.append((key_id.strip(), bytes.fromhex(digest)))
    return keys


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_host(scope: Mapping[str, Any]) -> str | None:
    """The address the service listens on, as the protocol said; None (keys required) when it did not."""
    host = scope.get(BIND_HOST)
    return host if isinstance(host, str) else None


class KeyChecker:
    def __init__(self, spec: str, dev_mode: bool) -> None:
        self.keys = parse_keys(spec)
        self.dev_mode = dev_mode

    def open_locally(self, bind_host: str | None, client_host: str | None) -> bool:
        """Dev mode waives keys only when the service listens on loopback and the client is local: a dev
        setting left on a public bind (0.0.0.0) still asks for keys, local clients included."""
        return self.dev_mode and is_loopback(bind_host) and is_loopback(client_host)

    def identify(self, presented: str | None) -> str | None:
        """The id of the key presented, or None. Every configured key is compared, in constant time."""
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode("utf-8")).digest()
        found = None
        for key_id, expected in self.keys:
            if hmac.compare_digest(digest, expected):  # no early exit: the time does not depend on which matched
                found = key_id
        return found


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.auth [KEY_ID]`: a new key for the client, and the entry for the server's setting."""
    args = sys.argv[1:] if argv is None else argv
    key_id = args[0] if args else "client-" + secrets.token_hex(3)
    key = secrets.token_urlsafe(32)
    sys.stdout.write(f"API key (give to the client, store nowhere else): {key}\n")
    sys.stdout.write(f"PATIENTINSIGHT_API_KEYS entry: {key_id}:{hash_key(key)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
