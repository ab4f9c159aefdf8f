"""`detour crds` in a real API server: the CRDs are accepted and established, every
example and documented document is created, invalid ones are refused by the server's own
schema validation naming the field, and `kubectl get`'s columns come from the server's
Table output."""

from __future__ import annotations

import copy
import re
from typing import Any, Callable

import pytest
import yaml

from harness import ROOT, ApiError, ApiServer

EXAMPLES = sorted((ROOT / "controller" / "examples" / "config").glob("*.yaml"))
DOCUMENTED = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
              *sorted((ROOT / "manifests").rglob("*.md"))]
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def detour_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text)
            if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("detour.dev/")]


def documented() -> list[tuple[str, dict[str, Any]]]:
    """Every detour document of the examples and of the docs' ```yaml blocks."""
    found = []
    for path in EXAMPLES:
        found += [(f"{path.name}: {d['kind']} {d['metadata']['name']}", d) for d in detour_docs(path.read_text())]
    for path in DOCUMENTED:
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S):
            if "apiVersion: detour.dev/" not in block:
                continue
            where = path.relative_to(ROOT)
            found += [(f"{where}: {d['kind']} {d['metadata']['name']}", d) for d in detour_docs(block)]
    return found


def test_detour_crds_is_what_manifests_ship_and_the_server_establishes_it(crds):
    # (The `crds` fixture applied them and waited for each to be Established.)
    shipped = [d for p in sorted((ROOT / "manifests" / "crds").glob("*.yaml"))
               for d in yaml.safe_load_all(p.read_text()) if d]
    assert crds == shipped
    assert {c["spec"]["names"]["kind"] for c in crds} == {"FailoverScheme", "MemberCluster"}


def test_the_server_has_nothing_to_warn_about_in_the_crds(clusters: dict[str, ApiServer], crds):
    # `kubectl apply` and `helm install` print the server's warnings (an unknown
    # `format`, say) to whoever installs detour. The server warns when it creates a
    # CRD: a dry run in a cluster without them.
    kube = clusters["south"].admin()
    for crd in crds:
        kube.create(crd, dryRun="All")
    assert kube.warnings == []


def test_every_example_and_documented_document_is_created(east: ApiServer, crds):
    kube = east.admin()
    docs = documented()
    where = {w.split(":")[0] for w, _ in docs}
    assert "README.md" in where and any("examples" not in w and w.endswith(".yaml") for w in where), where
    assert {d["kind"] for _, d in docs} == {"FailoverScheme", "MemberCluster"}
    for name, doc in docs:
        if ns := doc["metadata"].get("namespace"):
            kube.ensure_namespace(ns)
        try:
            created = kube.create(doc, fieldValidation="Strict")
        except ApiError as e:
            pytest.fail(f"{name}: refused by the API server: {e}")
        # Nothing written was pruned or changed (the schema may only add defaults).
        assert contains(created["spec"], doc["spec"]), (name, created["spec"])
        # Named as the examples name them (east, west, ...): gone again before the
        # controller tests create theirs.
        kube.delete(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"))


def contains(big: Any, small: Any) -> bool:
    """Whether `big` holds everything of `small` (objects may have more keys)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and contains(big[k], v) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(big) == len(small) and all(map(contains, big, small))
    return big == small


def example(kind: str) -> dict[str, Any]:
    (doc,) = [d for p in EXAMPLES for d in detour_docs(p.read_text()) if d["kind"] == kind][:1]
    doc = copy.deepcopy(doc)
    doc["metadata"]["name"] = f"refused-{kind.lower()}"
    return doc


def edited(kind: str, edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = example(kind)
    edit(doc["spec"])
    return doc


def group0(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["failoverGroups"][0]["priorityGroup"][0]


# What the schema can say, and the field the server names when it refuses.
REFUSED = [
    (edited("FailoverScheme", lambda s: s.pop("primary")), "spec.primary: Required value"),
    (edited("FailoverScheme", lambda s: s.update(failbak={"stableFor": "10s"})), 'unknown field "spec.failbak"'),
    (edited("FailoverScheme", lambda s: s["healthCheck"].update(interval="1 second")), "spec.healthCheck.interval"),
    (edited("FailoverScheme", lambda s: s["primary"].update(namespace="Apps")), "spec.primary.namespace"),
    (edited("FailoverScheme", lambda s: group0(s).update(weight=0)), "spec.failoverGroups[0].priorityGroup[0].weight"),
    (edited("FailoverScheme", lambda s: s.update(failoverGroups=[])), "spec.failoverGroups"),
    (edited("FailoverScheme", lambda s: s["replay"].update(methods=["GET /"])), "spec.replay.methods[0]"),
    (edited("MemberCluster", lambda s: s.pop("gateway")), "spec.gateway: Required value"),
    (edited("MemberCluster", lambda s: s["gateway"].update(port=0)), "spec.gateway.port"),
    (edited("MemberCluster", lambda s: s["gateway"].update(port=70000)), "spec.gateway.port"),
    (edited("MemberCluster", lambda s: s["gateway"].update(port="15443")), "spec.gateway.port"),
]


@pytest.mark.parametrize("doc, field", REFUSED, ids=[f for _, f in REFUSED])
def test_invalid_documents_are_refused_by_the_servers_schema(east: ApiServer, crds, doc, field):
    kube = east.admin()
    if ns := doc["metadata"].get("namespace"):
        kube.ensure_namespace(ns)
    with pytest.raises(ApiError) as refused:
        kube.create(doc, fieldValidation="Strict")
    assert refused.value.status in (400, 422), refused.value
    assert field in str(refused.value), refused.value
    assert kube.get_opt(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace")) is None


def table(kube, path: str) -> tuple[list[str], list[list[Any]]]:
    t = kube.request("GET", path, accept=TABLE)
    assert t["kind"] == "Table", t
    return [c["name"] for c in t["columnDefinitions"]], [r["cells"] for r in t["rows"]]


def test_printer_columns_come_from_the_servers_table_output(east: ApiServer, crds):
    kube = east.admin()
    kube.ensure_namespace("columns")
    scheme = example("FailoverScheme")
    scheme["metadata"] = {"name": "shown", "namespace": "columns"}
    kube.create(scheme)
    status = {"state": "Accepted", "activeGroup": 1, "message": "failed over: group 1 takes the traffic"}
    kube.request("PATCH", "/apis/detour.dev/v1alpha1/namespaces/columns/failoverschemes/shown/status",
                 {"status": status}, content_type="application/merge-patch+json")
    names, rows = table(kube, "/apis/detour.dev/v1alpha1/namespaces/columns/failoverschemes")
    assert names == ["Name", "State", "Active", "Primary", "Age", "Message"]
    (row,) = rows
    assert row[:4] == ["shown", "Accepted", 1, "east"]
    assert row[5] == status["message"]

    cluster = example("MemberCluster")
    cluster["metadata"] = {"name": "columns-west"}
    kube.create(cluster)
    kube.request("PATCH", "/apis/detour.dev/v1alpha1/memberclusters/columns-west/status",
                 {"status": {"state": "Accepted", "services": 3, "message": "services listed and watched"}},
                 content_type="application/merge-patch+json")
    names, rows = table(kube, "/apis/detour.dev/v1alpha1/memberclusters")
    assert names == ["Name", "State", "Gateway", "Services", "Age", "Message"]
    (row,) = [r for r in rows if r[0] == "columns-west"]
    assert row[1] == "Accepted" and row[2] == cluster["spec"]["gateway"]["address"] and row[3] == 3
    kube.delete("MemberCluster", "columns-west")
    kube.delete("FailoverScheme", "shown", "columns")
