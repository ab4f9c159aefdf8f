"""Shared helpers of the manifest tests: the chart through the real Helm SDK, every object
checked against the schema the API server would use (Kubernetes' own for built-in kinds,
detour's CRDs for detour's kinds)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART = MANIFESTS / "helm" / "detour"
CRDS = MANIFESTS / "crds"
EXAMPLES = ROOT / "controller" / "examples" / "config"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) is 1.27; objects are
# checked against a current release's schemas, which still serve every API it uses.
KUBE_VERSION = "1.33.0"
RELEASE = "detour"
NAMESPACE = "detour-system"


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def production_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Template name -> the objects it renders (NOTES.txt left out), as `helm install`."""
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {
        name: load_yaml_documents(text)
        for name, text in out.items()
        if not name.endswith("NOTES.txt")
    }


def objects(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [obj for docs in rendered.values() for obj in docs]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


# --- detour's CRDs as JSON Schema --------------------------------------------------------


def _strict(schema: Any, top: bool = False) -> Any:
    """A CRD's openAPIV3Schema as JSON Schema, with the API server's rules: `nullable`
    admits null, and (strict field validation, kubectl's default) an object with declared
    properties admits no others, unless the schema says it preserves unknown fields."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if top:
        # Every object has these; the API server checks them itself.
        out["properties"] = {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            **out["properties"],
        }
    return out


@cache
def crd_documents() -> dict[str, dict[str, Any]]:
    """kind -> CRD, from manifests/crds/."""
    crds = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in load_yaml_documents(path.read_text()):
            crds[crd["spec"]["names"]["kind"]] = crd
    return crds


@cache
def crd_validator(kind: str, version: str) -> jsonschema.Draft202012Validator:
    crd = crd_documents()[kind]
    served = [v for v in crd["spec"]["versions"] if v["name"] == version]
    assert served, f"the {kind} CRD serves no version {version}"
    schema = _strict(copy.deepcopy(served[0]["schema"]["openAPIV3Schema"]), top=True)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Why the API server would refuse a detour document (empty: accepted)."""
    group, version = obj["apiVersion"].split("/")
    assert group == "detour.dev", obj["apiVersion"]
    validator = crd_validator(obj["kind"], version)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


# --- every object ------------------------------------------------------------------------


# Kinds of other projects' CRDs, whose schemas are not at hand: the test rendering them
# checks what detour relies on.
THIRD_PARTY = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Schema problems of one rendered object (empty: the API server would take it)."""
    api = obj.get("apiVersion", "")
    if api.startswith("detour.dev/"):
        return crd_errors(obj)
    if (api, obj.get("kind")) in THIRD_PARTY:
        return []
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{obj['kind']}/{obj['metadata'].get('name')}: {path}: {e.message}"]
    return []
