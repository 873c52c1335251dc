"""Which Prometheus a resource may have queried, and with which query: the platform decides.

By default every query goes to the operator's own Prometheus (``OPTILOOP_PROMETHEUS_URL``) with
the default queries, scoped to the resource's namespace, name and revision. A resource's
``spec.monitoring.prometheus.url`` is used only when it is on the operator's allowlist
(``OPTILOOP_PROMETHEUS_ALLOWED_URLS``), and never when it names the API server or a link-local,
unspecified or multicast address (the cloud metadata service among them). Its
``queryTemplate`` names one of the drift queries the platform configured
(``OPTILOOP_PROMETHEUS_QUERY_TEMPLATES``); there is no free-text PromQL from tenants.

Pure: the caller passes the configuration and the API server's address.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Collection, Mapping

from ..api import ModelOptimization
from ..api.validation import FieldError

API_SERVER_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")
METADATA_NAMES = ("metadata", "metadata.google.internal", "metadata.azure.internal")


def access_errors(
    resource: ModelOptimization,
    allowed_urls: Collection[str],
    templates: Mapping[str, str],
    api_server_host: str | None,
) -> list[FieldError]:
    """What the resource asks of Prometheus that the operator's configuration does not allow."""
    prometheus = resource.spec.monitoring.prometheus
    errors: list[FieldError] = []
    if prometheus.url is not None:
        problem = url_problem(prometheus.url, allowed_urls, api_server_host)
        if problem:
            errors.append(FieldError("spec.monitoring.prometheus.url", problem))
    if prometheus.query_template is not None and prometheus.query_template not in templates:
        known = ", ".join(sorted(templates)) or "none are configured"
        errors.append(
            FieldError(
                "spec.monitoring.prometheus.queryTemplate",
                f"{prometheus.query_template!r} is not a query template of this operator ({known})",
            )
        )
    return errors


def url_problem(url: str, allowed_urls: Collection[str], api_server_host: str | None) -> str:
    """Why a tenant may not use ``url`` (empty when it may)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    cluster_names = {n for name in API_SERVER_NAMES for n in (name, f"{name}.cluster.local")}
    if host in cluster_names or host.startswith("kubernetes.default.svc.") or host == (api_server_host or "").lower():
        return "must not be the Kubernetes API server"
    if host in METADATA_NAMES:
        return "must not be a cloud metadata service"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None and (ip.is_link_local or ip.is_unspecified or ip.is_multicast):
        return "must not be a link-local, unspecified or multicast address (the cloud metadata service among them)"
    if not allowed_urls:
        return (
            "this operator lets resources use only its own Prometheus: remove the field, or ask the "
            "platform team to allow the URL (chart value prometheus.tenantUrlAllowlist)"
        )
    if not any(_allows(entry, parts) for entry in allowed_urls):
        return f"not among the Prometheus URLs this operator allows: {', '.join(sorted(allowed_urls))}"
    return ""


def _allows(entry: str, url: urllib.parse.SplitResult) -> bool:
    """An entry ``scheme://host`` allows any port and path on that host; with a port, only that
    port; with a path, only below it."""
    allowed = urllib.parse.urlsplit(entry)
    if (allowed.scheme, (allowed.hostname or "").lower()) != (url.scheme, (url.hostname or "").lower()):
        return False
    default = 443 if url.scheme == "https" else 80
    if allowed.port is not None and allowed.port != (url.port or default):
        return False
    prefix = allowed.path.rstrip("/")
    return not prefix or url.path == prefix or url.path.startswith(prefix + "/")
