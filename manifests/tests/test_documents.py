"""Example FailoverScheme/MemberCluster documents against the CRDs' structural schemas, as
the API server would check them on `kubectl apply` (strict field validation), and proof
that the check refuses what the API server refuses."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conftest import EXAMPLES, MANIFESTS, crd_errors, load_yaml_documents

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
# Documents anywhere under manifests/ (the Istio and Envoy examples' config, if any).
MANIFEST_FILES = sorted(
    p
    for p in MANIFESTS.rglob("*.yaml")
    if "templates" not in p.parts and "crds" not in p.parts
)


def detour_documents(paths: list[Path]) -> list[tuple[str, dict]]:
    found = []
    for path in paths:
        for doc in load_yaml_documents(path.read_text()):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("detour.dev/"):
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


def test_the_examples_are_accepted_by_the_crds():
    docs = detour_documents(EXAMPLE_FILES + MANIFEST_FILES)
    kinds = {d["kind"] for _, d in docs}
    assert kinds == {"FailoverScheme", "MemberCluster"}, kinds
    for where, doc in docs:
        assert crd_errors(doc) == [], where


def example(kind: str) -> dict:
    (doc,) = [d for _, d in detour_documents(EXAMPLE_FILES) if d["kind"] == kind][:1]
    return copy.deepcopy(doc)


def scheme_with(edit) -> dict:
    doc = example("FailoverScheme")
    edit(doc["spec"])
    return doc


def cluster_with(edit) -> dict:
    doc = example("MemberCluster")
    edit(doc["spec"])
    return doc


@pytest.mark.parametrize(
    "doc, field",
    [
        (scheme_with(lambda s: s.pop("primary")), "spec: 'primary' is a required property"),
        (scheme_with(lambda s: s.update(failbak={"stableFor": "10s"})), "spec: Additional properties"),
        (scheme_with(lambda s: s["healthCheck"].update(interval="1 second")), "spec.healthCheck.interval"),
        (scheme_with(lambda s: s["primary"].update(namespace="Apps")), "spec.primary.namespace"),
        (scheme_with(lambda s: s["failoverGroups"][0]["priorityGroup"][0].update(weight=-1)),
         "spec.failoverGroups.0.priorityGroup.0.weight"),
        (scheme_with(lambda s: s["replay"].update(methods=["GET /"])), "spec.replay.methods.0"),
        (cluster_with(lambda s: s.pop("gateway")), "spec: 'gateway' is a required property"),
        (cluster_with(lambda s: s["gateway"].update(port=0)), "spec.gateway.port"),
        (cluster_with(lambda s: s["gateway"].update(port="15443")), "spec.gateway.port"),
        (cluster_with(lambda s: s["services"][0].update(protocol="tcp")), "spec.services.0.protocol"),
        (scheme_with(lambda s: s["healthCheck"].update(grpc={"service": "x"})),
         "spec.healthCheck.grpc: Additional properties"),
    ],
)
def test_invalid_documents_are_refused_with_the_field(doc, field):
    errors = crd_errors(doc)
    assert any(e.startswith(field) for e in errors), errors


def test_protocols_and_grpc_checks_are_accepted():
    for protocol in ["http", "http2", "grpc"]:
        doc = cluster_with(lambda s: s["services"][0].update(protocol=protocol))
        assert crd_errors(doc) == [], protocol

    def grpc_check(spec):
        spec["healthCheck"].pop("path")
        spec["healthCheck"]["grpc"] = {"serviceName": ""}

    assert crd_errors(scheme_with(grpc_check)) == []
