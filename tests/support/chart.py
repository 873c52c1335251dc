"""Rendering the Helm chart with the pinned Helm, and applying what it renders."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.control_plane import binaries_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "optiloop"
KUBE_VERSION = "1.34.4"


def helm() -> str:
    """The Helm binary built with the test control plane."""
    path = binaries_dir() / "helm"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make install`")
    return str(path)


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


def render(release: str, namespace: str, values: dict[str, Any] | None = None, tmp: Path | None = None) -> list[dict]:
    """``helm template`` of the chart as a list of objects (empty documents dropped)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    if values:
        assert tmp is not None, "pass a folder for the values file"
        file = tmp / f"{release}-values.yaml"
        file.write_text(yaml.safe_dump(values))
        args += ["--values", str(file)]
    result = run_helm(*args)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def apply(api: Any, objects: list[dict], dry_run: bool = False) -> list[dict]:
    """Create every object (server-side dry run when ``dry_run``); returns what the server answered."""
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(api)
    answered = []
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace") if resource.namespaced else None
        kwargs = {"dry_run": "All"} if dry_run else {}
        answered.append(resource.create(body=obj, namespace=namespace, **kwargs).to_dict())
    return answered
