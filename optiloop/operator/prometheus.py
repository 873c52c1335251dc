"""The operator's only Prometheus caller: one instant query, answered as a number or not at all.

Any failure (connection refused, timeout, an HTTP error, a body that is not Prometheus' JSON,
a non-numeric sample) is *unreachable*: the caller must not act on it. An empty result is a
valid answer ("no samples") and is told apart from it.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueryResult:
    """``reachable`` False: no usable answer. ``value`` None with ``reachable``: no samples."""

    reachable: bool
    value: float | None = None
    error: str = ""


def query(base_url: str, promql: str, timeout: float = 5.0) -> QueryResult:
    """Run an instant query; several series are folded with max (the worst one counts)."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            document = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("Prometheus at %s did not answer %r: %s", base_url, promql, exc)
        return QueryResult(False, error=str(exc))
    return parse_answer(document)


def parse_answer(document: object) -> QueryResult:
    """Read an instant-query answer (``vector`` or ``scalar``) into a :class:`QueryResult`."""
    try:
        if not isinstance(document, dict) or document.get("status") != "success":
            raise ValueError(f"status is not success: {str(document)[:200]}")
        data = document["data"]
        kind, result = data["resultType"], data["result"]
        if kind == "scalar":
            samples = [result[1]]
        elif kind == "vector":
            samples = [series["value"][1] for series in result]
        else:
            raise ValueError(f"unexpected resultType {kind!r}")
        values = [float(v) for v in samples]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return QueryResult(False, error=f"unreadable answer: {exc}")
    finite = [v for v in values if not math.isnan(v)]
    return QueryResult(True, max(finite) if finite else None)
