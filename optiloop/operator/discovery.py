"""Finding out what the cluster serves with, through its API, and caching it.

One discovery reads four API group versions (KServe's InferenceService, Knative Serving's
Service, the Gateway API's HTTPRoute, KEDA's ScaledObject) and KServe's
``inferenceservice-config`` ConfigMap. The answer is reused for ``OPTILOOP_DISCOVERY_SECONDS``
(60 by default), so installing Knative or the Gateway API is noticed within a minute and a
reconcile costs no extra requests. A discovery that fails on the way (API server trouble) keeps
the previous answer; with none yet, the error is raised and the reconcile retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .capabilities import (
    GATEWAY_API,
    KEDA_API,
    KNATIVE_API,
    KSERVE_API,
    Capabilities,
    KServeDefault,
    KServeIngress,
    default_from_config,
    ingress_from_config,
    serves,
)
from .k8s import Cluster, ForbiddenError, TransientApiError

log = logging.getLogger(__name__)


class Discovery:
    """The cluster's serving capabilities, discovered at most every ``ttl`` seconds."""

    def __init__(
        self,
        cluster: Cluster,
        kserve_config: tuple[str, str],
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.kserve_config = kserve_config
        self.ttl = ttl
        self.clock = clock
        self._known: Capabilities | None = None
        self._at = float("-inf")
        self._guard = threading.Lock()

    def capabilities(self) -> Capabilities:
        """What the cluster offers now (from the cache while it is fresh)."""
        with self._guard:
            if self._known is not None and self.clock() - self._at < self.ttl:
                return self._known
            try:
                self._known = self._discover()
            except TransientApiError as exc:
                if self._known is None:
                    raise
                log.warning("keeping the last discovery of the cluster's serving capabilities: %s", exc)
            self._at = self.clock()
            return self._known

    def forget(self) -> None:
        """Discover again at the next call (after the cluster refused something it was said to serve)."""
        with self._guard:
            self._at = float("-inf")

    def _discover(self) -> Capabilities:
        found = {
            api: serves(self.cluster.api_resources(api[0]), api[1])
            for api in (KSERVE_API, KNATIVE_API, GATEWAY_API, KEDA_API)
        }
        default, ingress = self._kserve_config()
        return Capabilities(
            kserve=found[KSERVE_API],
            knative=found[KNATIVE_API],
            gateway_api=found[GATEWAY_API],
            keda=found[KEDA_API],
            kserve_default=default,
            kserve_ingress=ingress,
        )

    def _kserve_config(self) -> tuple[KServeDefault, KServeIngress]:
        """KServe's default mode and host naming, from its ConfigMap."""
        namespace, name = self.kserve_config
        source = f"{namespace}/{name}"
        try:
            config_map = self.cluster.get_config_map(namespace, name)
        except ForbiddenError:
            forbidden = f"the operator may not read ConfigMap {source} (403 Forbidden)"
            return KServeDefault(None, source, forbidden), KServeIngress(source=source)
        data = config_map.get("data") or {} if config_map is not None else None
        return default_from_config(data, source), ingress_from_config(data, source)
