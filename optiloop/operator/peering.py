"""Kopf's peering resources, which let several operator replicas agree on one active replica.

Kopf keeps each replica's priority and last heartbeat in the ``status`` of a ``KopfPeering``
(namespaced mode) or ``ClusterKopfPeering`` (cluster-wide mode) object. The Helm chart installs
these definitions and the peering object; tests install them into their API server.
"""

from __future__ import annotations

from typing import Any

PEERING_GROUP = "kopf.dev"


def _crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{PEERING_GROUP}"},
        "spec": {
            "group": PEERING_GROUP,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Operator replicas of one peering neighbourhood (written by Kopf).",
                            "properties": {
                                # Kopf keys the status by replica identity, which no schema can list.
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


def peering_crds() -> list[dict[str, Any]]:
    """The ``KopfPeering`` and ``ClusterKopfPeering`` definitions."""
    return [
        _crd("KopfPeering", "kopfpeerings", "Namespaced"),
        _crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
    ]


def peering_object(name: str, namespace: str | None) -> dict[str, Any]:
    """The peering object the replicas share: namespaced when ``namespace`` is given."""
    if namespace is None:
        return {"apiVersion": f"{PEERING_GROUP}/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    return {
        "apiVersion": f"{PEERING_GROUP}/v1",
        "kind": "KopfPeering",
        "metadata": {"name": name, "namespace": namespace},
    }
