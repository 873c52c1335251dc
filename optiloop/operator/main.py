"""``optiloop operator``: Kopf with optiloop's handlers, settings and configuration.

Configuration comes from ``OPTILOOP_*`` variables (see :mod:`optiloop.operator.config`); the
command-line flags override the scope and peering ones. Kubernetes credentials: the pod's
service account in a cluster, ``$KUBECONFIG`` elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence


def run_operator(
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    standalone: bool = False,
    priority: int | None = None,
    verbose: bool = False,
) -> None:
    """Run until SIGINT or SIGTERM. ``namespaces`` (or ``OPTILOOP_NAMESPACES``) restricts the
    watch; otherwise every namespace is watched."""
    if namespaces:
        os.environ["OPTILOOP_NAMESPACES"] = ",".join(namespaces)
    elif all_namespaces:
        os.environ["OPTILOOP_NAMESPACES"] = ""
    if priority is not None:
        os.environ["OPTILOOP_PRIORITY"] = str(priority)
    if standalone:
        os.environ["OPTILOOP_PEERING"] = ""

    import kopf

    # The event loop that reads every watch competes for the GIL with the reconcile threads; a
    # shorter switch interval (5 ms by default) hands it back sooner, which is what keeps the
    # reaction to a new resource quick while many reconciles run.
    sys.setswitchinterval(0.001)

    from . import handlers  # registers the handlers, reading the configuration once

    config = handlers.CONFIG
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        # Kopf says "succeeded" for every event and timer tick (50 lines a second for 500
        # resources); what went wrong is still logged, and each of our Events is a line too.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    liveness = f"http://{config.metrics_address}:{config.health_port}/healthz" if config.health_port else None
    kopf.run(
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        standalone=not config.peering,
        peering_name=config.peering or None,
        priority=config.priority,
        liveness_endpoint=liveness,
    )
