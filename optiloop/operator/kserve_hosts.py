"""The host names KServe v0.20 gives an InferenceService, and whether KServe will accept them.

KServe renders its ``ingress.domainTemplate`` (``{{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}``
by default) for the InferenceService's name and, in Standard mode, for its predictor component
(``<name>-predictor``), and refuses a host that is not a fully qualified domain name, as
Kubernetes' ``IsFullyQualifiedDomainName`` defines it. Nothing refuses the InferenceService when it
is created: it stays not Ready with ``ReconcileFailed`` and no Deployment (the real-node test
``test_kserve_refuses_a_predictor_host_name_over_63_characters...`` shows it). With the default
template the predictor's name and the namespace share one 63-character label, so names that
Kubernetes accepts one by one can still make a model KServe cannot serve. The operator checks the
hosts first and says which names to shorten.

Only the template fields KServe fills from names (``.Name``, ``.Namespace``, ``.IngressDomain``)
are rendered here; a template that uses anything else (annotations, labels, functions) is not
checked, since its result cannot be known without KServe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .capabilities import KServeIngress

MAX_LABEL = 63
MAX_NAME = 253
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
_FIELDS = {".Name", ".Namespace", ".IngressDomain"}
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass(frozen=True)
class HostProblem:
    """A host KServe would refuse, and why."""

    component: str
    host: str
    problem: str


def render(template: str, name: str, namespace: str, ingress_domain: str) -> str | None:
    """``template`` with its name fields filled in; None when it uses anything else."""
    values = {".Name": name, ".Namespace": namespace, ".IngressDomain": ingress_domain}
    unknown = False

    def fill(match: re.Match[str]) -> str:
        nonlocal unknown
        action = match.group(1)
        if action not in _FIELDS:
            unknown = True
            return ""
        return values[action]

    rendered = _ACTION.sub(fill, template)
    return None if unknown else rendered


def fqdn_problem(host: str) -> str | None:
    """Why ``host`` is not a fully qualified domain name (Kubernetes' rules, which KServe applies);
    None when it is one."""
    name = host.removesuffix(".")
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it has {len(name)} characters (at most {MAX_NAME})"
    labels = name.split(".")
    if len(labels) < 2:
        return "it has no dots (a fully qualified name has at least two labels)"
    for label in labels:
        if len(label) > MAX_LABEL:
            return f"its label {label!r} has {len(label)} characters (at most {MAX_LABEL})"
        if not _LABEL.fullmatch(label):
            return f"its label {label!r} is not lower-case letters, digits and inner '-'"
    return None


def problems(inference_service: str, namespace: str, standard: bool, ingress: KServeIngress) -> list[HostProblem]:
    """The hosts KServe would refuse for InferenceService ``inference_service`` in ``namespace``
    (``standard``: KServe's Standard mode, which also names the predictor component's host)."""
    components = [("InferenceService", inference_service)]
    if standard:
        components.append(("predictor", f"{inference_service}-predictor"))
    found = []
    for component, name in components:
        host = render(ingress.domain_template, name, namespace, ingress.ingress_domain)
        if host is None:
            continue
        problem = fqdn_problem(host)
        if problem is not None:
            found.append(HostProblem(component, host, problem))
    return found
