"""Namespaces for tests on the real API server: fresh names, and `restricted` Pod Security on demand."""

from __future__ import annotations

import re
import secrets
from typing import Any

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def stem_of(node_name: str) -> str:
    """A DNS-label stem from a test's name, at most 24 characters: KServe puts the namespace and
    the predictor's name in one 63-character host label, and the operator refuses longer ones."""
    return re.sub(r"[^a-z0-9]+", "-", node_name.lower()).strip("-")[:24].strip("-")


def create_namespace(api: Any, stem: str, restricted: bool = False) -> str:
    """Create ``<stem>-<random>``, enforcing the `restricted` profile when asked; returns its name."""
    from kubernetes import client

    name = f"{stem}-{secrets.token_hex(3)}"
    metadata = client.V1ObjectMeta(name=name, labels=dict(RESTRICTED) if restricted else None)
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=metadata))
    return name


def delete_namespace(api: Any, name: str) -> None:
    from kubernetes import client

    client.CoreV1Api(api).delete_namespace(name)
