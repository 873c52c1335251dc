"""Storage for pods on the test node: no provisioner runs there, so a claim gets a static hostPath
PersistentVolume on a host folder, pre-bound to it (docs/real-node.md, "What pods get")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.control_plane import wait_for


def claim_on_host_folder(api: Any, namespace: str, claim: str, folder: Path) -> None:
    """Create the claim ``claim`` in ``namespace`` and a hostPath PersistentVolume on ``folder``
    pre-bound to it, and wait until the claim is Bound (a pod started before that waits minutes for
    the scheduler's next try). ``folder`` is a host path: the node's mount namespace sees it."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    volume = f"{namespace}-{claim}"
    access = ["ReadWriteOnce"]
    core.create_persistent_volume({
        "metadata": {"name": volume},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": access, "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(folder), "type": "Directory"},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    })  # fmt: skip
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": claim},
            "spec": {
                "accessModes": access, "storageClassName": "", "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )  # fmt: skip
    wait_for(
        lambda: core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase == "Bound",
        60,
        interval=0.25,
        what=f"claim {claim} to be Bound",
    )
