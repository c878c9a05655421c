"""HTTP/1.1 spoken by hand, for the tests of what a client's bytes do to the service: read a connection
until the server closes it, and parse the one response that came back."""

from __future__ import annotations

import json
import socket


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def parse(raw: bytes) -> tuple[int, dict[str, str], object]:
    """Status, headers (lower-case names) and JSON body of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)
