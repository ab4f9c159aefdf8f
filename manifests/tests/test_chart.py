"""The Helm chart, rendered and linted by the real Helm SDK (helm-python-sdk binds Helm's Go
code), every object validated against the Kubernetes schemas, and the chart's promises
checked on what it renders: security settings, probes, ports, least-privilege RBAC,
certificates laid out as `detour certs init` writes them."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest
import yaml

from conftest import (
    CHART,
    CRDS,
    KUBE_VERSION,
    NAMESPACE,
    crd_errors,
    objects,
    one,
    production_values,
    render,
    validation_errors,
)

VALUE_SETS = {
    "defaults": None,
    "production": production_values(),
}


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request, chart) -> tuple[str, list[dict[str, Any]]]:
    return request.param, objects(render(chart, VALUE_SETS[request.param]))


def test_lint_is_clean_for_every_value_set():
    for name, values in VALUE_SETS.items():
        report = helm.lint(
            CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
        )
        assert report["total_charts_linted"] == 1
        # Severity 1 is INFO (e.g. "icon is recommended"); warnings and errors fail.
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not problems and not report["errors"], f"{name}: {problems} {report['errors']}"


def test_every_rendered_object_is_valid(rendered):
    name, objs = rendered
    kinds = sorted({o["kind"] for o in objs})
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole", "Role"} <= set(kinds)
    errors = [e for o in objs for e in validation_errors(o)]
    assert not errors, f"{name}: {errors}"


def test_the_crds_are_valid_and_identical_to_manifests_crds(chart):
    shipped = {c["filename"].split("/")[-1]: c["data"] for c in chart.crds}
    expected = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert expected, "manifests/crds/ is empty"
    assert shipped.keys() == expected.keys()
    for name, text in expected.items():
        assert shipped[name] == text, f"crds/{name} differs from manifests/crds/{name}"
        for crd in yaml.safe_load_all(text):
            assert validation_errors(crd) == []


def test_the_pod_runs_locked_down_with_probes_on_the_plain_ops_port(rendered):
    name, objs = rendered
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    args = container["args"]
    assert args[:2] == ["serve", "--kubernetes"]
    assert f"--ops-listen=0.0.0.0:{ports['ops']}" in args
    assert f"--listen=0.0.0.0:{ports['tables']}" in args
    assert {"requests", "limits"} <= container["resources"].keys()
    assert not any(v.get("hostPath") for v in pod.get("volumes", []))


def test_services_pdb_and_servicemonitor_select_the_pods(rendered):
    name, objs = rendered
    deployment = one(objs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert container_ports == {"tables", "ops"}

    def selects(selector: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    tables = one(objs, "Service", "detour")
    ops = one(objs, "Service", "detour-ops")
    for service in (tables, ops):
        assert selects(service["spec"]["selector"])
    # The unauthenticated ops endpoints never share the published table Service.
    assert [p["targetPort"] for p in tables["spec"]["ports"]] == ["tables"]
    assert [p["targetPort"] for p in ops["spec"]["ports"]] == ["ops"]
    assert ops["spec"]["type"] == "ClusterIP"
    pdb = one(objs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"])
    monitors = [o for o in objs if o["kind"] == "ServiceMonitor"]
    if name == "defaults":
        assert not monitors, "the ServiceMonitor is off by default"
    else:
        (monitor,) = monitors
        matched = [s["metadata"]["name"] for s in (tables, ops) if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert matched == ["detour-ops"]
        for endpoint in monitor["spec"]["endpoints"]:
            # /metrics is on the plain ops listener (the table port may require mTLS).
            assert endpoint["port"] == "http-ops" and endpoint["path"] == "/metrics"


def test_the_ops_port_is_never_published_beyond_the_cluster(chart):
    """Even with the table Service a LoadBalancer (production values), the ops port is
    on a ClusterIP Service, or on none."""
    for values in (production_values(), {"service": {"type": "NodePort"}}):
        services = [o for o in objects(render(chart, values)) if o["kind"] == "Service"]
        for service in services:
            ports = {p["targetPort"] for p in service["spec"]["ports"]}
            assert "ops" not in ports or service["spec"]["type"] == "ClusterIP", service
    without = [o for o in objects(render(chart, {"opsService": {"enabled": False}})) if o["kind"] == "Service"]
    assert [s["metadata"]["name"] for s in without] == ["detour"]
    with pytest.raises(helm.HelmError) as refused:
        render(chart, {"opsService": {"enabled": False}, "serviceMonitor": {"enabled": True}})
    assert "serviceMonitor.enabled needs opsService.enabled" in str(refused.value)
    # There is no type to set on it.
    with pytest.raises(helm.HelmValuesError):
        chart.render({"opsService": {"type": "LoadBalancer"}}, name="detour", namespace=NAMESPACE, is_install=True)


def test_the_scheme_policy_reaches_serve(chart):
    args = one(objects(render(chart)), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    # By default no namespace reaches into another.
    assert not [a for a in args if a.startswith("--allow-cross-namespace")]
    assert "--max-replay-body-bytes=1048576" in args and "--min-health-check-interval=100ms" in args
    values = {"policy": {"allowCrossNamespace": ["platform=*", "team-b=apps"], "maxReplayBodyBytes": 4194304}}
    args = one(objects(render(chart, values)), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allow-cross-namespace=platform=*" in args and "--allow-cross-namespace=team-b=apps" in args
    assert "--max-replay-body-bytes=4194304" in args


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_memory_is_sized_from_the_bench_figures(rendered):
    """`make bench BENCH_ARGS=controller`: 224 MiB of RSS at 5,000 targets, 383 MiB at
    10,000 (values.yaml); the defaults hold 5,000 and production values 10,000, each with
    room for a reload, which holds two models at once."""
    name, objs = rendered
    resources = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]
    measured = {"defaults": 224, "production": 383}[name]
    assert mebibytes(resources["limits"]["memory"]) >= 2 * measured
    assert mebibytes(resources["requests"]["memory"]) >= measured


def test_the_table_limit_reaches_serve(chart):
    args = one(objects(render(chart)), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    # The filter's own default (filter/src/table.rs DEFAULT_MAX_TABLE_BYTES).
    assert "--max-table-bytes=4194304" in args
    args = one(objects(render(chart, {"maxTableBytes": 8388608})), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--max-table-bytes=8388608" in args


def test_the_connection_limits_reach_serve(chart):
    values = {"connections": {"maxLongPolls": 500, "maxStatusWatchers": 8, "headerReadTimeout": "5s", "idleTimeout": "2m"}}
    args = one(objects(render(chart, values)), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    for flag in ("--max-long-polls=500", "--max-status-watchers=8", "--header-read-timeout=5s", "--idle-timeout=2m"):
        assert flag in args


# What `serve --kubernetes` calls (kube/src/: source.rs watches, status.rs
# patch_status, events.rs create, lease.rs get/create/replace, secrets.rs get_opt + apply),
# as (namespace or "*", apiGroup, resource, resourceNames, verbs).
EXPECTED_RULES = {
    ("*", "detour.dev", "failoverschemes", (), ("list", "watch")),
    ("*", "detour.dev", "memberclusters", (), ("list", "watch")),
    ("*", "detour.dev", "failoverschemes/status", (), ("patch",)),
    ("*", "detour.dev", "memberclusters/status", (), ("patch",)),
    ("*", "", "services", (), ("list", "watch")),
    ("*", "discovery.k8s.io", "endpointslices", (), ("list", "watch")),
    ("*", "events.k8s.io", "events", (), ("create",)),
    ("release", "coordination.k8s.io", "leases", ("LEASE",), ("get", "update")),
    ("release", "coordination.k8s.io", "leases", (), ("create",)),
    ("release", "", "secrets", (), ("list", "watch")),
    ("member", "", "secrets", ("detour-mtls-gateway", "detour-mtls-client"), ("get", "patch")),
    ("member", "", "secrets", (), ("create",)),
}


def granted_rules(objs: list[dict[str, Any]], service_account: str) -> set[tuple]:
    """Every (namespace, group, resource, names, verbs) bound to the ServiceAccount."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objs if o["kind"] in ("Role", "ClusterRole")}
    granted = set()
    for binding in (o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.add((namespace or "*", group, resource, tuple(rule.get("resourceNames", ())), tuple(sorted(rule["verbs"]))))
    return granted


def test_rbac_grants_exactly_what_serve_kubernetes_uses(rendered):
    name, objs = rendered
    values = VALUE_SETS[name] or {}
    member_ns = values.get("memberNamespace") or NAMESPACE
    lease = values.get("leaseName", "detour")
    service_account = one(objs, "ServiceAccount")["metadata"]["name"]
    assert one(objs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == service_account

    def place(rule: tuple) -> tuple:
        ns, group, resource, names, verbs = rule
        ns = {"release": NAMESPACE, "member": member_ns}.get(ns, ns)
        names = tuple(lease if n == "LEASE" else n for n in names)
        return (ns, group, resource, names, verbs)

    assert granted_rules(objs, service_account) == {place(r) for r in EXPECTED_RULES}
    assert f"--lease-name={lease}" in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


CONTROLLER_FILES = {
    "ca.crt", "controller/server.crt", "controller/server.key", "controller/probe.crt", "controller/probe.key",
    # Every CA to trust: in the Secret during a change of CA only.
    "trust.crt",
}


def certs_volume(pod: dict[str, Any]) -> dict[str, str]:
    """The files of the pod's certificates volume: path -> "Secret/key"."""
    (volume,) = pod["volumes"]
    (mount,) = pod["containers"][0]["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    assert f"--certs={mount['mountPath']}" in pod["containers"][0]["args"]
    return {
        item["path"]: f"{source['secret']['name']}/{item['key']}"
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


def test_certificates_are_mounted_as_certs_init_lays_them_out(chart):
    objs = objects(render(chart, {"certificates": {"secretName": "detour-certs"}}))
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    # docs/internals.md: CERTS/ca.crt and CERTS/controller/{server,probe}.{crt,key}; no
    # CA key unless asked for: the controller then issues no member Secret.
    files = certs_volume(pod)
    assert set(files) == CONTROLLER_FILES
    # A Secret without trust.crt (no change of CA under way) still mounts.
    (volume,) = pod["volumes"]
    (trust,) = [s["secret"] for s in volume["projected"]["sources"]
                if any(i["key"] == "trust.crt" for i in s["secret"]["items"])]
    assert trust.get("optional") is True
    assert not any(s["secret"].get("optional") for s in volume["projected"]["sources"] if s["secret"] is not trust)
    assert all(f.startswith("detour-certs/") for f in files.values())
    # Without the Secret: no mount, no --certs (a plaintext lab).
    plain = one(objects(render(chart)), "Deployment")["spec"]["template"]["spec"]
    assert "volumes" not in plain
    assert not any(a.startswith("--certs") for a in plain["containers"][0]["args"])


def test_the_ca_key_is_mounted_where_the_issuer_reads_it(chart):
    """CERTS/ca.key is what makes the leader issue and renew member clusters' Secrets
    (kube/issuer.rs); it may come from a Secret of its own, under any key."""
    values = {"certificates": {"secretName": "detour-certs", "caKey": {"secretName": "detour-ca", "key": "tls.key"}}}
    pod = one(objects(render(chart, values)), "Deployment")["spec"]["template"]["spec"]
    files = certs_volume(pod)
    assert set(files) == CONTROLLER_FILES | {"ca.key"}
    assert files["ca.key"] == "detour-ca/tls.key"
    same = {"certificates": {"secretName": "detour-certs", "caKey": {"secretName": "detour-certs"}}}
    pod = one(objects(render(chart, same)), "Deployment")["spec"]["template"]["spec"]
    assert certs_volume(pod)["ca.key"] == "detour-certs/ca.key"
    # A CA key alone, without the certificates it goes with, is a mistake.
    with pytest.raises(helm.HelmError) as refused:
        render(chart, {"certificates": {"caKey": {"secretName": "detour-ca"}}})
    assert "certificates.caKey.secretName needs certificates.secretName" in str(refused.value)


def test_member_clusters_from_values_are_valid_documents(chart):
    values = production_values()
    clusters = [o for o in objects(render(chart, values)) if o["kind"] == "MemberCluster"]
    assert [c["metadata"]["name"] for c in clusters] == [m["name"] for m in values["memberClusters"]]
    for cluster, wanted in zip(clusters, values["memberClusters"]):
        assert crd_errors(cluster) == []
        assert "namespace" not in cluster["metadata"], "MemberCluster is cluster-scoped"
        assert cluster["spec"]["gateway"] == {"port": 15443, **wanted["gateway"]}
        assert cluster["spec"].get("kubeconfigSecret") == wanted.get("kubeconfigSecret")


def test_notes_tell_the_next_steps(chart):
    notes = chart.render(None, name="detour", namespace=NAMESPACE, is_install=True)["detour/templates/NOTES.txt"]
    for step in ("detour cluster register", "manifests/istio", "detour render envoy", "detour status"):
        assert step in notes
    assert "plaintext" in notes
    quiet = chart.render(production_values(), name="detour", namespace=NAMESPACE, is_install=True)
    assert "plaintext" not in quiet["detour/templates/NOTES.txt"]


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"replicas": 0}, "/replicas"),
        ({"replica": 3}, "replica"),  # a typo is refused, not ignored
        ({"image": {"repository": ""}}, "/image/repository"),
        ({"ports": {"tables": 70000, "ops": 9090}}, "/ports/tables"),
        ({"maxWait": "60"}, "/maxWait"),
        ({"certificates": {"secretName": "Detour_Certs"}}, "/certificates/secretName"),
        ({"certificates": {"caKey": {"secretName": "ca", "file": "ca.key"}}}, "/certificates/caKey"),
        ({"memberClusters": [{"name": "west"}]}, "/memberClusters/0"),
        ({"memberClusters": [{"name": "west", "gateway": {"address": "gw", "port": "15443"}}]}, "/memberClusters/0/gateway/port"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
        ({"serviceMonitor": {"enabled": "yes"}}, "/serviceMonitor/enabled"),
        ({"connections": {"maxLongPolls": 0}}, "/connections/maxLongPolls"),
        ({"policy": {"allowCrossNamespace": ["team-b"]}}, "/policy/allowCrossNamespace/0"),
        ({"connections": {"idleTimeout": "90"}}, "/connections/idleTimeout"),
    ],
)
def test_values_breaking_the_schema_are_refused(chart, values, complaint):
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values, name="detour", namespace=NAMESPACE, is_install=True)
    assert complaint in str(refused.value)
    # `helm lint` says the same.
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert any(complaint in e for e in report["errors"]), report
