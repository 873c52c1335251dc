"""The chart as a user installs it on a real cluster: ``helm install --wait`` and ``helm uninstall``
with the pinned Helm (tests/support/chart.py), and what a release left on the cluster."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.chart import CHART, helm


class HelmError(Exception):
    """A Helm command failed; the message has its arguments and its output."""


def helm_command(kubeconfig: Path, workdir: Path, *args: str, timeout: float = 120) -> str:
    """Run Helm against ``kubeconfig`` and return its standard output. Helm's caches and settings go
    to ``workdir`` (not the user's home): a test leaves nothing of Helm's behind."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(workdir / "helm-cache"),
        "HELM_CONFIG_HOME": str(workdir / "helm-config"),
        "HELM_DATA_HOME": str(workdir / "helm-data"),
    }
    done = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if done.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done.stdout


def values_file(workdir: Path, release: str, values: dict[str, Any]) -> Path:
    file = workdir / f"{release}-values.yaml"
    file.write_text(yaml.safe_dump(values))
    return file


def install(
    kubeconfig: Path, workdir: Path, release: str, namespace: str, values: dict[str, Any], wait_seconds: int = 300
) -> str:
    """``helm install --wait`` of the chart: returns once Helm itself saw every object ready (the
    operator's Deployment's pods Ready), or raises with Helm's own message."""
    file = values_file(workdir, release, values)
    return helm_command(
        kubeconfig, workdir,
        "install", release, str(CHART), "--namespace", namespace, "--values", str(file),
        "--wait", "--timeout", f"{wait_seconds}s",
        timeout=wait_seconds + 60,
    )  # fmt: skip


def manifest(kubeconfig: Path, workdir: Path, release: str, namespace: str) -> list[dict[str, Any]]:
    """Every object the installed release holds (``helm get manifest``; the CRDs of ``crds/`` are not
    part of a release)."""
    out = helm_command(kubeconfig, workdir, "get", "manifest", release, "--namespace", namespace)
    return [doc for doc in yaml.safe_load_all(out) if doc]


def releases(kubeconfig: Path, workdir: Path) -> list[dict[str, Any]]:
    """``helm list --all-namespaces --all``: every release Helm knows, failed and pending ones included."""
    return list(yaml.safe_load(helm_command(kubeconfig, workdir, "list", "-A", "--all", "-o", "yaml")) or [])


def uninstall(kubeconfig: Path, workdir: Path, release: str, namespace: str, wait_seconds: int = 180) -> str:
    """``helm uninstall --wait``: returns once every object of the release is deleted."""
    return helm_command(
        kubeconfig, workdir, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", f"{wait_seconds}s",
        timeout=wait_seconds + 60,
    )  # fmt: skip


def describe(obj: dict[str, Any]) -> str:
    """``Kind namespace/name`` of a manifest's object (no namespace: cluster-scoped)."""
    return f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"


def remaining(api: Any, objects: list[dict[str, Any]]) -> list[str]:
    """``Kind namespace/name`` of each of ``objects`` still on the cluster."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import NotFoundError

    dynamic = DynamicClient(api)
    found = []
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace") if resource.namespaced else None
        try:
            resource.get(name=obj["metadata"]["name"], namespace=namespace)
        except NotFoundError:
            continue
        found.append(describe(obj))
    return found
