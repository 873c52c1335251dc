"""Render the ModelOptimization CRD from the pydantic models: the only writer of ``crds/``.

    python -m optiloop.api.crd            # rewrite crds/modeloptimization.yaml
    python -m optiloop.api.crd --check    # exit 1 when the file differs from a fresh render
    python -m optiloop.api.crd --stdout   # print the rendered CRD

Pydantic's JSON schema is close to, but not, a Kubernetes structural schema; this
module closes the gap: references are inlined, ``X | None`` becomes an optional
``X``, exclusive bounds take OpenAPI 3.0's boolean form, maps with a fixed key set
become objects, key patterns become CEL rules, and defaults are kept only for scalars
(object defaults stay in Python, where they cannot disagree with a one-of rule).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from . import resource
from ._base import cel_string
from .resource import ModelOptimization

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "modeloptimization.yaml"
CHART_CRD_FILE = Path(__file__).resolve().parents[2] / "charts" / "optiloop" / "crds" / "modeloptimization.yaml"

Schema = dict[str, Any]

_DROPPED_KEYS = {"title", "additionalProperties", "patternProperties", "propertyNames", "$defs"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Display phase."},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the model is served and healthy.",
    },
    {
        "name": "Mode",
        "type": "string",
        "jsonPath": ".status.serving.mode",
        "description": "KServe's deployment mode in effect (Standard or Knative).",
        "priority": 1,
    },
    {
        "name": "Canary",
        "type": "string",
        "jsonPath": ".status.serving.canaryMethod",
        "description": "How a retrained revision is tried: KnativeTraffic, GatewayAPI or BlueGreen.",
        "priority": 1,
    },
    {
        "name": "Objective",
        "type": "number",
        "jsonPath": ".status.model.primaryValue",
        "description": "Primary metric of the served model on the test split.",
    },
    {
        "name": "Size",
        "type": "integer",
        "jsonPath": ".status.model.sizeBytes",
        "description": "Served model size in bytes.",
    },
    {
        "name": "P95-Latency",
        "type": "number",
        "jsonPath": ".status.model.latencyP95Ms",
        "description": "p95 latency at batch size 1, in milliseconds.",
    },
    {"name": "Revision", "type": "integer", "jsonPath": ".status.revision", "description": "Current revision."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


class _Converter:
    def __init__(self, defs: dict[str, Schema]) -> None:
        self.defs = defs

    def convert(self, node: Schema) -> Schema:
        node = copy.deepcopy(node)
        if "$ref" in node:
            target = self.defs[node.pop("$ref").rsplit("/", 1)[-1]]
            merged = {**copy.deepcopy(target), **node}  # the field's own description wins
            return self.convert(merged)
        if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
            branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
            if len(branches) != 1:
                raise ValueError(f"cannot render a union of {branches} as a structural schema")
            if node.get("default", 0) is None:
                node.pop("default")
            return self.convert({**branches[0], **node})
        if node.get("x-kubernetes-int-or-string"):
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            node.pop("type", None)
        if "const" in node:
            node["enum"] = [node.pop("const")]

        out: Schema = {}
        for key, value in node.items():
            if key in _DROPPED_KEYS:
                continue
            if key == "properties":
                out["properties"] = {name: self.convert(sub) for name, sub in value.items()}
            elif key == "items":
                out["items"] = self.convert(value)
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            elif key == "default":
                if _is_scalar(value) or (isinstance(value, list) and all(_is_scalar(v) for v in value)):
                    out["default"] = value
            elif key == "description":
                # Docstrings use reStructuredText literals; kubectl explain reads better with single backticks.
                out["description"] = " ".join(value.split()).replace("``", "`")
            else:
                out[key] = copy.deepcopy(value)

        if node.get("type") == "object":
            self._convert_map(node, out)
        return out

    def _convert_map(self, node: Schema, out: Schema) -> None:
        values = node.get("additionalProperties")
        keys = dict(node.get("propertyNames", {}))
        if "patternProperties" in node:
            # Pydantic puts a key pattern here; CRDs do not support it, so it becomes a CEL rule.
            ((keys["pattern"], values),) = node["patternProperties"].items()
        if not isinstance(values, dict):
            return
        if "enum" in keys:
            # A map with a fixed key set (resource names) is an object with optional properties.
            out["properties"] = {
                key: {**self.convert(values), "description": f"Amount of {key}."} for key in keys["enum"]
            }
            out.pop("maxProperties", None)
            return
        out["additionalProperties"] = self.convert(values)
        rules = []
        if "pattern" in keys:
            rules.append(
                {
                    "rule": f"self.all(k, k.matches({cel_string(keys['pattern'])}))",
                    "message": f"every key must match {keys['pattern']}",
                }
            )
        if "maxLength" in keys:
            rules.append(
                {
                    "rule": f"self.all(k, size(k) <= {keys['maxLength']})",
                    "message": f"keys are at most {keys['maxLength']} characters",
                }
            )
        if rules:
            out["x-kubernetes-validations"] = out.get("x-kubernetes-validations", []) + rules


def openapi_schema() -> Schema:
    """The ``openAPIV3Schema`` of the ModelOptimization CRD."""
    raw = ModelOptimization.model_json_schema(by_alias=True, mode="validation")
    converter = _Converter(raw.get("$defs", {}))
    schema = converter.convert(raw)
    properties = schema["properties"]
    properties["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    }
    properties["kind"] = {"type": "string", "description": "Kind is a string value representing the REST resource."}
    # The API server lets a CRD constrain only metadata.name (and generateName); the
    # name rules live there so its errors read "metadata.name: ...".
    name_rules = schema.pop("x-kubernetes-validations")
    for rule in name_rules:
        rule.pop("fieldPath", None)
        rule.pop("reason", None)
        rule["rule"] = rule["rule"].replace("self.metadata.name", "self")
    properties["metadata"] = {
        "type": "object",
        "properties": {"name": {"type": "string", "x-kubernetes-validations": name_rules}},
    }
    schema["required"] = ["spec"]
    _mark_condition_list(properties["status"])
    return schema


def _mark_condition_list(status: Schema) -> None:
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]


def render_crd() -> dict[str, Any]:
    """The CustomResourceDefinition object for ModelOptimization."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{resource.PLURAL}.{resource.GROUP}",
            "annotations": {"optiloop.dev/generated-by": "python -m optiloop.api.crd"},
        },
        "spec": {
            "group": resource.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": resource.KIND,
                "listKind": f"{resource.KIND}List",
                "plural": resource.PLURAL,
                "singular": resource.SINGULAR,
                "shortNames": list(resource.SHORT_NAMES),
                "categories": list(resource.CATEGORIES),
            },
            "versions": [
                {
                    "name": resource.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render_yaml() -> str:
    """The CRD as the YAML text stored in ``crds/``."""
    header = "# Generated by `python -m optiloop.api.crd` from optiloop/api; do not edit.\n"
    return header + yaml.safe_dump(render_crd(), sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optiloop.api.crd", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if the CRD file differs from a fresh render")
    mode.add_argument("--stdout", action="store_true", help="print the CRD instead of writing it")
    parser.add_argument("--file", type=Path, default=CRD_FILE, help=f"CRD file (default: {CRD_FILE})")
    args = parser.parse_args(argv)

    rendered = render_yaml()
    if args.stdout:
        sys.stdout.write(rendered)
        return 0
    # The Helm chart ships a byte-identical copy; both are written and checked together.
    files = [args.file] if args.file != CRD_FILE else [CRD_FILE, CHART_CRD_FILE]
    if args.check:
        stale = [f for f in files if (f.read_text() if f.exists() else "") != rendered]
        for file in stale:
            print(f"{file} is out of date: run `python -m optiloop.api.crd`", file=sys.stderr)
        return 1 if stale else 0
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".yaml.tmp")
        tmp.write_text(rendered)
        tmp.replace(file)
        print(f"wrote {file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
