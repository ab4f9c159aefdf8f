"""The Helm chart in a real API server (the `helm` cluster, empty before): installed,
upgraded with changed values and uninstalled by the Helm SDK, every object accepted.
Between upgrade and uninstall the controller runs as a process (there is no kubelet)
exactly as the Deployment says, with a token of the chart's ServiceAccount: the API server
enforces the chart's RBAC, and everything detour does works under it, while a verb
beyond it is refused."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import pytest
import yaml

from harness import (
    RESOURCES,
    ROOT,
    ApiError,
    ApiServer,
    Controller,
    Gateway,
    Kube,
    Pki,
    detour,
    free_port,
    parse_register,
    wait_for,
)
from test_controller import endpoint_slice, events, scheme, service, status

CHART = ROOT / "manifests" / "helm" / "detour"
RELEASE = "detour"
NAMESPACE = "detour-system"
SERVICE_ACCOUNT = "detour"
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
GATEWAYS = {"hub": "127.0.44.1", "west": "127.0.45.1"}
ENDPOINTS = {"hub": "192.0.2.44", "west": "192.0.2.45"}  # never connected to (see test_controller)


def manifest_objects(release: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(release["manifest"]) if d]


def assert_exist(kube: Kube, objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        assert obj["kind"] in RESOURCES, f"the test does not know where {obj['kind']} lives"
        meta = obj["metadata"]
        found = kube.get(obj["kind"], meta["name"], meta.get("namespace", NAMESPACE))
        assert found["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", found["metadata"]


class Setup:
    def __init__(self, dir: Path, cluster: ApiServer, west: ApiServer, pki: Pki):
        self.dir = dir
        self.cluster = cluster
        self.west = west
        self.pki = pki
        self.kube = cluster.admin()
        self.ports = {c: free_port(a) for c, a in GATEWAYS.items()}
        self.certs = dir / "certs"


@pytest.fixture(scope="module")
def setup(out: Path, clusters: dict[str, ApiServer], pki: Pki) -> Iterator[Setup]:
    s = Setup(out / "helm-release", clusters["helm"], clusters["west"], pki)
    config = s.dir / "config"
    config.mkdir(parents=True)
    config.joinpath("clusters.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "detour.dev/v1alpha1", "kind": "MemberCluster", "metadata": {"name": c},
         "spec": {"gateway": {"address": a, "port": s.ports[c]}}}
        for c, a in GATEWAYS.items()
    ]))
    detour("certs", "init", "--config", str(config), "--out", str(s.certs))
    s.kube.ensure_namespace(NAMESPACE)
    # What the chart's README says to create before installing.
    files = {"ca.crt": "ca.crt", "server.crt": "controller/server.crt", "server.key": "controller/server.key",
             "probe.crt": "controller/probe.crt", "probe.key": "controller/probe.key"}
    s.kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "detour-certs", "namespace": NAMESPACE},
                  "data": {k: base64.b64encode((s.certs / p).read_bytes()).decode() for k, p in files.items()}})
    s.kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "detour-ca", "namespace": NAMESPACE},
                  "data": {"ca.key": base64.b64encode((s.certs / "ca.key").read_bytes()).decode()}})
    yield s


@pytest.fixture(scope="module")
def config(setup: Setup) -> Iterator[helm.Config]:
    with helm.Config(kubeconfig_content=setup.cluster.kubeconfig(), namespace=NAMESPACE) as c:
        yield c


INSTALL_VALUES = {"certificates": {"secretName": "detour-certs"}}


def upgrade_values(setup: Setup) -> dict[str, Any]:
    return {
        "replicas": 3,
        "leaseName": "detour-hub",
        "certificates": {"secretName": "detour-certs", "caKey": {"secretName": "detour-ca"}},
        "log": {"format": "text", "level": "info,detour=debug"},
        "memberClusters": [
            {"name": "hub", "gateway": {"address": GATEWAYS["hub"], "port": setup.ports["hub"]}},
            {"name": "west", "gateway": {"address": GATEWAYS["west"], "port": setup.ports["west"]},
             "kubeconfigSecret": {"name": "west-kubeconfig"}},
        ],
    }


def test_install_creates_every_object_and_the_crds(setup: Setup, config: helm.Config):
    release = config.install(CHART, RELEASE, INSTALL_VALUES, namespace=NAMESPACE, timeout=60)
    assert release["status"] == "deployed" and release["revision"] == 1, release
    objs = manifest_objects(release)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
            "RoleBinding", "PodDisruptionBudget"} <= kinds, kinds
    assert_exist(setup.kube, objs)
    for crd in ("failoverschemes.detour.dev", "memberclusters.detour.dev"):
        conditions = setup.kube.get("CustomResourceDefinition", crd)["status"]["conditions"]
        assert any(c["type"] == "Established" and c["status"] == "True" for c in conditions), crd
    deployment = setup.kube.get("Deployment", "detour", NAMESPACE)
    assert deployment["spec"]["replicas"] == 2


def test_upgrade_with_changed_values_changes_the_objects(setup: Setup, config: helm.Config):
    release = config.upgrade(CHART, RELEASE, upgrade_values(setup), namespace=NAMESPACE, timeout=60)
    assert release["status"] == "deployed" and release["revision"] == 2, release
    objs = manifest_objects(release)
    assert_exist(setup.kube, objs)
    deployment = setup.kube.get("Deployment", "detour", NAMESPACE)
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--lease-name=detour-hub" in container["args"]
    role = setup.kube.get("Role", "detour", NAMESPACE)
    assert any(r.get("resourceNames") == ["detour-hub"] for r in role["rules"]), role["rules"]
    assert [m["metadata"]["name"] for m in setup.kube.list("MemberCluster")] == ["hub", "west"]


def mounted(setup: Setup, deployment: dict[str, Any], into: Path) -> None:
    """Lays out the Deployment's certificates volume as the kubelet would mount it."""
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    for source in volume["projected"]["sources"]:
        secret = setup.kube.get("Secret", source["secret"]["name"], NAMESPACE)
        for item in source["secret"]["items"]:
            if item["key"] not in secret["data"] and source["secret"].get("optional"):
                continue  # the kubelet leaves an optional key out
            path = into / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(secret["data"][item["key"]]))


@pytest.fixture(scope="module")
def running(setup: Setup, config: helm.Config) -> Iterator[Controller]:
    """The Deployment's container as a process, with its ServiceAccount's token."""
    kube = setup.kube
    deployment = kube.get("Deployment", "detour", NAMESPACE)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    certs = setup.dir / "mounted-certs"
    mounted(setup, deployment, certs)
    args = []
    for arg in container["args"]:
        if arg in ("serve", "--kubernetes") or arg.startswith(("--listen=", "--ops-listen=")):
            continue  # Controller sets these: loopback ports instead of the pod's.
        args.append(arg.replace(f"--certs={mount['mountPath']}", f"--certs={certs}"))
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["POD_NAMESPACE"] = NAMESPACE
    env["POD_NAME"] = "detour-7d9f-abcde"
    token = kube.token_for(NAMESPACE, pod["serviceAccountName"])

    # The member cluster west, registered as `detour cluster register` says (its
    # MemberCluster comes from the chart's values).
    docs = parse_register(detour("cluster", "register", "--name", "west", "--gateway",
                                 f"{GATEWAYS['west']}:{setup.ports['west']}", "--server", setup.west.server,
                                 "--controller-namespace", NAMESPACE).stdout)
    for doc in docs["member"]:
        setup.west.admin().apply(doc)
    member_token = setup.west.admin().token_for("detour-system", "detour-member")
    (secret,) = [d for d in docs["management"] if d["kind"] == "Secret"]
    secret["stringData"]["kubeconfig"] = (secret["stringData"]["kubeconfig"]
                                          .replace("<CA>", setup.pki.ca_data()).replace("<TOKEN>", member_token))
    kube.apply(secret)
    for name, cluster in (("hub", setup.cluster), ("west", setup.west)):
        k = cluster.admin()
        k.ensure_namespace("apps")
        k.apply(service("apps", "foo"))
        k.apply(endpoint_slice("apps", "foo", [ENDPOINTS[name]]))
    kube.apply(scheme("foo", [["west"]], primary="hub"))
    gateways = [Gateway(a, setup.ports[c], setup.certs, c) for c, a in GATEWAYS.items()]
    controller = Controller("detour-7d9f-abcde", setup.dir, setup.cluster.kubeconfig(token=token), args, env=env)
    try:
        yield controller
    finally:
        controller.process.stop()
        for g in gateways:
            g.stop()


def refusals(setup: Setup) -> list[str]:
    return [f"{e['verb']} {e['objectRef']}" for e in setup.cluster.audit()
            if e["user"]["username"] == USER and e["responseStatus"]["code"] == 403]


def test_the_controller_does_everything_under_the_charts_rbac(setup: Setup, running: Controller):
    kube = setup.kube
    wait_for("the Lease taken", lambda: kube.get("Lease", "detour-hub", NAMESPACE)["spec"].get("holderIdentity")
             == "detour-7d9f-abcde", 20)
    for name in ("hub", "west"):
        wait_for(f"MemberCluster {name} Accepted",
                 lambda: (s := status(kube, "MemberCluster", name)).get("state") == "Accepted" and s.get("services") == 1,
                 30)
    wait_for("apps/foo Accepted, every target Healthy",
             lambda: (s := status(kube, "FailoverScheme", "foo", "apps")).get("state") == "Accepted"
             and [t["health"] for t in s["targets"]] == ["Healthy", "Healthy"], 30)
    kube.apply(endpoint_slice("apps", "foo", []))
    wait_for("apps/foo failed over", lambda: status(kube, "FailoverScheme", "foo", "apps").get("activeGroup") == 1, 20)
    wait_for("its Event", lambda: events(kube, "apps", "FailedOver", "foo"), 10)
    # The mTLS Secrets, from the CA key the chart mounts: here, and in west (replacing
    # any issued by another CA before).
    ca = (setup.certs / "ca.crt").read_bytes()
    for cluster in (setup.cluster, setup.west):
        for name in ("detour-mtls-gateway", "detour-mtls-client"):
            wait_for(f"{name} in {cluster.name} from this CA",
                     lambda: (s := cluster.admin().get_opt("Secret", name, "detour-system"))
                     and base64.b64decode(s["data"]["ca.crt"]) == ca, 20)
    # Nothing detour tried was refused.
    assert not refusals(setup), refusals(setup)
    assert "forbidden" not in running.log().lower(), running.process.tail()


# What the chart does not grant: each refused by the API server.
BEYOND = [
    ("read a Secret by name (only list/watch, for kubeconfigs)", "GET",
     f"/api/v1/namespaces/{NAMESPACE}/secrets/detour-ca", None),
    ("write a scheme's spec", "PATCH", "/apis/detour.dev/v1alpha1/namespaces/apps/failoverschemes/foo",
     {"spec": {"failback": {"stableFor": "1s"}}}),
    ("delete a MemberCluster", "DELETE", "/apis/detour.dev/v1alpha1/memberclusters/west", None),
    ("write a Secret outside its namespaces", "POST", "/api/v1/namespaces/apps/secrets",
     {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
    ("write another Lease", "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/other",
     {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "other"}}),
]


@pytest.mark.parametrize("what, method, path, body", BEYOND, ids=[b[0] for b in BEYOND])
def test_a_verb_beyond_the_charts_rbac_is_refused(setup: Setup, running: Controller, what, method, path, body):
    token = setup.kube.token_for(NAMESPACE, SERVICE_ACCOUNT)
    as_detour = setup.cluster.as_token(token)
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    with pytest.raises(ApiError) as refused:
        as_detour.request(method, path, body, content_type=content_type)
    assert refused.value.status == 403, refused.value
    assert USER in str(refused.value)


def test_uninstall_removes_every_object(setup: Setup, config: helm.Config, running: Controller):
    running.process.stop()
    objs = manifest_objects(config.status(RELEASE))
    config.uninstall(RELEASE, timeout=60)
    for obj in objs:
        meta = obj["metadata"]
        assert setup.kube.get_opt(obj["kind"], meta["name"], meta.get("namespace", NAMESPACE)) is None, obj["kind"]
    with pytest.raises(helm.HelmNotFoundError):
        config.status(RELEASE)
    # Helm keeps CRDs (and so every scheme) on uninstall.
    assert setup.kube.get_opt("CustomResourceDefinition", "failoverschemes.detour.dev")
