"""The operator's only Prometheus caller: one instant query, answered as a number or not at all.

Any failure (connection refused, no answer within the deadline, an HTTP error, an answer
larger than the byte cap, a body that is not Prometheus' JSON, a non-numeric sample) is
*unreachable*: the caller must not act on it. An empty result is a valid answer ("no samples")
and is told apart from it.

Every query has an overall deadline (a server that drips one byte every few seconds is cut off
when it passes, not when a single read waits too long) and a byte cap (an endless answer is
never held in memory): a Prometheus a tenant points at cannot stall or exhaust the operator.
Nothing of an answer but its number leaves this module (errors say what went wrong, never
what the server sent).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import logging
import math
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

log = logging.getLogger(__name__)
DEADLINE_SECONDS = 5.0
MAX_ANSWER_BYTES = 1 << 20
"""An instant query of one resource's series answers in well under a kilobyte."""


@dataclass(frozen=True)
class QueryResult:
    """``reachable`` False: no usable answer. ``value`` None with ``reachable``: no samples."""

    reachable: bool
    value: float | None = None
    error: str = ""


class _UnusableError(Exception):
    """The answer cannot be used (too large, too slow, not a success)."""


def query(
    base_url: str,
    promql: str,
    deadline: float = DEADLINE_SECONDS,
    max_bytes: int = MAX_ANSWER_BYTES,
    refuse_private: bool = False,
) -> QueryResult:
    """Run an instant query within ``deadline`` seconds in all, reading at most ``max_bytes``;
    several series are folded with max (the worst one counts). ``refuse_private``: refuse a host
    that resolves to a link-local, unspecified or multicast address (a tenant's URL)."""
    started = time.monotonic()
    try:
        document = _fetch(base_url, promql, deadline, max_bytes, refuse_private)
    except (_UnusableError, OSError, http.client.HTTPException, ValueError) as exc:
        error = f"{exc}" if isinstance(exc, _UnusableError | ValueError) else f"{type(exc).__name__}: {exc}"
        if time.monotonic() - started >= deadline:
            error = f"no answer within {deadline:g} s"
        log.warning("Prometheus at %s did not answer %r: %s", base_url, promql, error)
        return QueryResult(False, error=error)
    return parse_answer(document)


def _fetch(base_url: str, promql: str, deadline: float, max_bytes: int, refuse_private: bool) -> object:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _UnusableError(f"not an http(s) URL: {base_url}")
    if refuse_private:
        refused_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    path = f"{parts.path.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=deadline)
    # One watchdog for the whole exchange: it closes the socket when the deadline passes, which
    # ends a read that a slow server keeps alive one byte at a time.
    watchdog = threading.Timer(deadline, _cut, (connection,))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("GET", path, headers={"Accept": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise _UnusableError(f"HTTP {response.status}")
        body = response.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise _UnusableError(f"an answer larger than {max_bytes} bytes")
        return json.loads(body)
    finally:
        watchdog.cancel()
        connection.close()


def _cut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def refused_address(host: str, port: int) -> None:
    """Raise when ``host`` resolves to an address no tenant's Prometheus may have: link-local
    (the cloud metadata service among them), unspecified or multicast."""
    for *_, address in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP):
        ip = ipaddress.ip_address(str(address[0]).split("%")[0])
        if ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            raise _UnusableError(f"{host} resolves to {ip}, which no Prometheus may have")


def parse_answer(document: object) -> QueryResult:
    """Read an instant-query answer (``vector`` or ``scalar``) into a :class:`QueryResult`."""
    try:
        if not isinstance(document, dict) or document.get("status") != "success":
            raise ValueError("status is not success")
        data = document["data"]
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            samples = [result[1]]
        elif kind == "vector":
            samples = [series["value"][1] for series in result]
        else:
            raise ValueError("unexpected resultType")
        values = [float(v) for v in samples]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return QueryResult(False, error=f"unreadable answer: {exc}")
    finite = [v for v in values if not math.isnan(v)]
    return QueryResult(True, max(finite) if finite else None)
