"""`detour serve --kubernetes` against real API servers: the management cluster `east`
(also a member) and the members `west` and `south`, registered as `detour cluster
register` says, so that the members' API servers enforce the RBAC it prints.

The tests of this module run in order on one federation: discovery and acceptance, a
failover and its Event, a refused scheme, the mTLS Secrets and their renewal, then a
second replica and the hand-over of the Lease."""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from harness import (
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

CONTROLLER_NS = "detour-e2e"
MEMBER_NS = "detour-system"
LEASE = "detour-e2e"
# Short enough to see a renewal within the test: renewed two thirds into it.
CERT_LIFETIME_S = 30
GATEWAYS = {"east": "127.0.41.1", "west": "127.0.42.1", "south": "127.0.43.1"}
# Pod addresses in the EndpointSlices (which refuse loopback ones): documentation
# addresses (RFC 5737) that nothing here ever connects to — health checks go through the
# gateways, and no Envoy runs in these tests.
ENDPOINTS = {"east": "192.0.2.41", "west": "192.0.2.42", "south": "192.0.2.43"}
# Lease timing of `serve` (client-go's defaults): taken over this long after it last
# changed, read every RETRY_PERIOD_S.
LEASE_DURATION_S = 15
RETRY_PERIOD_S = 2
# A follower sees the Lease's last change up to one read period late, and counts the
# lease duration from then; beyond that, time for the API calls on a busy machine.
SLACK_S = 2


@dataclass
class Federation:
    clusters: dict[str, ApiServer]
    certs: Path
    gateways: dict[str, Gateway]
    controllers: dict[str, Controller]
    dir: Path
    pki: Pki

    @property
    def east(self) -> Kube:
        return self.clusters["east"].admin()

    def kube(self, cluster: str) -> Kube:
        return self.clusters[cluster].admin()

    def replica(self, name: str, *args: str) -> Controller:
        """A replica of the controller, with a client certificate of its own, so that
        the API server's audit log tells the replicas' writes apart; `args` are more of
        `serve`'s flags."""
        cert = self.pki.client(f"replica-{name}", f"detour-{name}", ["system:masters"])
        controller = Controller(name, self.dir, self.clusters["east"].kubeconfig(cert=cert), [
            "--namespace", CONTROLLER_NS, "--lease-name", LEASE, "--member-namespace", MEMBER_NS,
            "--certs", str(self.certs), "--member-cert-lifetime", f"{CERT_LIFETIME_S}s", *args,
        ])
        self.controllers[name] = controller
        return controller


def service(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}}


def endpoint_slice(namespace: str, name: str, addresses: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "namespace": namespace, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def scheme(name: str, groups: list[list[str]], primary: str = "east") -> dict[str, Any]:
    return {
        "apiVersion": "detour.dev/v1alpha1", "kind": "FailoverScheme",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "primary": {"cluster": primary, "name": name, "namespace": "apps"},
            "failoverGroups": [
                {"priorityGroup": [{"cluster": c, "services": [{"name": name, "namespace": "apps"}]} for c in group]}
                for group in groups
            ],
            "healthCheck": {"path": "/healthz", "interval": "500ms", "timeout": "400ms",
                            "unhealthyThreshold": 1, "healthyThreshold": 1},
            "failback": {"stableFor": "2s"},
        },
    }


def register(fed_clusters: dict[str, ApiServer], pki: Pki, name: str, gateway: str, port: int) -> None:
    """What an operator does: `detour cluster register`, its member part applied in the
    member cluster and its management part, filled in, in the management cluster."""
    member = fed_clusters[name]
    out = detour("cluster", "register", "--name", name, "--gateway", f"{gateway}:{port}",
                 "--server", member.server, "--namespace", MEMBER_NS,
                 "--controller-namespace", CONTROLLER_NS).stdout
    docs = parse_register(out)
    kinds = {d["kind"] for d in docs["member"]}
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Role", "Secret"} <= kinds, kinds
    for doc in docs["member"]:
        member.admin().apply(doc)
    # The token Secret is filled by kube-controller-manager, which these clusters do not
    # run: the token comes from the TokenRequest API instead (the same ServiceAccount).
    token = member.admin().token_for(MEMBER_NS, "detour-member")
    management = fed_clusters["east"].admin()
    for doc in docs["management"]:
        if doc["kind"] == "Secret":
            (key,) = doc["stringData"]
            text = doc["stringData"][key]
            assert "<CA>" in text and "<TOKEN>" in text, text
            doc["stringData"][key] = text.replace("<CA>", pki.ca_data()).replace("<TOKEN>", token)
        management.apply(doc)


@pytest.fixture(scope="module")
def federation(out: Path, clusters: dict[str, ApiServer], crds, pki: Pki) -> Iterator[Federation]:
    dir = out / "federation"
    dir.mkdir()
    east = clusters["east"].admin()
    for ns in (CONTROLLER_NS, MEMBER_NS, "apps"):
        east.ensure_namespace(ns)
    ports = {c: free_port(a) for c, a in GATEWAYS.items()}
    # The federation CA and every certificate, from the MemberClusters as files.
    config = dir / "config"
    config.mkdir()
    config.joinpath("clusters.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "detour.dev/v1alpha1", "kind": "MemberCluster", "metadata": {"name": c},
         "spec": {"gateway": {"address": a, "port": ports[c]}}}
        for c, a in GATEWAYS.items()
    ]))
    certs = dir / "certs"
    detour("certs", "init", "--config", str(config), "--out", str(certs))
    assert (certs / "ca.key").exists()
    gateways = {c: Gateway(a, ports[c], certs, c) for c, a in GATEWAYS.items()}
    east.apply(yaml.safe_load(detour("cluster", "register", "--name", "east", "--gateway",
                                     f"{GATEWAYS['east']}:{ports['east']}", "--local").stdout))
    for name in ("west", "south"):
        register(clusters, pki, name, GATEWAYS[name], ports[name])
    for name in ("east", "west", "south"):
        kube = clusters[name].admin()
        kube.ensure_namespace("apps")
        kube.apply(service("apps", "foo"))
        kube.apply(endpoint_slice("apps", "foo", [ENDPOINTS[name]]))
    east.apply(scheme("foo", [["west"], ["south"]]))
    fed = Federation(clusters, certs, gateways, {}, dir, pki)
    fed.replica("a")
    try:
        yield fed
    finally:
        for c in fed.controllers.values():
            c.process.stop()
        for g in gateways.values():
            g.stop()


def status(kube: Kube, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return kube.get(kind, name, namespace).get("status") or {}


def events(kube: Kube, namespace: str, reason: str, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("Event", namespace)
            if e.get("reason") == reason and e["regarding"]["name"] == name]


def test_member_clusters_are_accepted_with_their_services_discovered(federation: Federation):
    for name in ("east", "west", "south"):
        st = wait_for(f"MemberCluster {name} Accepted with its service",
                      lambda: (s := status(federation.east, "MemberCluster", name)).get("state") == "Accepted"
                      and s.get("services") == 1 and s,
                      30)
        assert st["message"].startswith("services listed and watched"), st


def test_the_scheme_is_accepted_on_its_primary_with_every_target_checked(federation: Federation):
    kube = federation.east
    st = wait_for("scheme apps/foo Accepted, every target Healthy",
                  lambda: (s := status(kube, "FailoverScheme", "foo", "apps")).get("state") == "Accepted"
                  and all(t["health"] == "Healthy" for t in s.get("targets", [])) and len(s["targets"]) == 3 and s,
                  40)
    assert st["activeGroup"] == 0, st
    assert st["observedGeneration"] == kube.get("FailoverScheme", "foo", "apps")["metadata"]["generation"]
    assert {t["cluster"] for t in st["targets"]} == {"east", "west", "south"}
    # Every check went through that cluster's gateway, for the service by name.
    for name, gateway in federation.gateways.items():
        assert "foo.apps" in gateway.hosts, (name, gateway.hosts[-3:])
    # Status is detour's, by server-side apply on the status subresource.
    managers = {(m["manager"], m.get("subresource")) for m in kube.get("FailoverScheme", "foo", "apps")["metadata"]["managedFields"]}
    assert ("detour", "status") in managers, managers


def test_the_status_api_lists_every_discovered_service_protected_or_not(federation: Federation):
    """Issue 16, point 5: a Service no scheme names, discovered in a member cluster, is in
    the status API beside the scheme's own, unprotected; the model (and so every table
    and check) still holds only the services schemes name."""
    west = federation.kube("west")
    west.ensure_namespace("web")
    west.apply(service("web", "shop"))
    west.apply(endpoint_slice("web", "shop", [ENDPOINTS["west"]]))
    ops = federation.controllers["a"].ops

    def listed() -> dict[tuple[str, str], list[tuple[str, str, int]]]:
        with urllib.request.urlopen(f"http://{ops}/v1/status", timeout=5) as r:
            doc = json.load(r)
        return {(s["cluster"], s["service"]): [(p["scheme"], p["role"], p["group"]) for p in s["protection"]]
                for s in doc["services"]}

    services = wait_for("west's web/shop in the status API", lambda: ("west", "web/shop") in (s := listed()) and s, 30)
    # Every Service, the API server's own `default/kubernetes` in each cluster too.
    assert services == {
        ("east", "apps/foo"): [("apps/foo", "Primary", 0)],
        ("east", "default/kubernetes"): [],
        ("south", "apps/foo"): [("apps/foo", "Target", 2)],
        ("south", "default/kubernetes"): [],
        ("west", "apps/foo"): [("apps/foo", "Target", 1)],
        ("west", "default/kubernetes"): [],
        ("west", "web/shop"): [],
    }, services
    with urllib.request.urlopen(f"http://{ops}/v1/status", timeout=5) as r:
        doc = json.load(r)
    assert doc["summary"]["services"] == {"protected": 3, "unprotected": 4}, doc["summary"]
    shop = next(s for s in doc["services"] if s["service"] == "web/shop")
    assert (shop["port"], shop["protocol"]) == (8080, "http"), shop
    west_cluster = next(c for c in doc["clusters"] if c["name"] == "west")
    assert west_cluster["primaries"] == 0, west_cluster
    # Gone again: the listing follows.
    west.delete("EndpointSlice", "shop-1", "web")
    west.delete("Service", "shop", "web")
    wait_for("web/shop gone from the status API", lambda: ("west", "web/shop") not in listed(), 30)


def test_emptying_the_primarys_endpoints_fails_over_with_an_event(federation: Federation):
    kube = federation.east
    kube.apply(endpoint_slice("apps", "foo", []))
    st = wait_for("apps/foo failed over to group 1",
                  lambda: (s := status(kube, "FailoverScheme", "foo", "apps")).get("activeGroup") == 1 and s, 20)
    assert st["state"] == "Accepted"
    assert "failed over" in st["message"] and "west" in st["message"], st["message"]
    (east,) = [t for t in st["targets"] if t["cluster"] == "east"]
    assert east["health"] == "Unhealthy"
    (event, *_) = wait_for("a FailedOver Event", lambda: events(kube, "apps", "FailedOver", "foo"), 10)
    assert event["type"] == "Warning"
    assert event["regarding"]["kind"] == "FailoverScheme" and event["regarding"]["namespace"] == "apps"
    assert event["reportingController"] == "detour.dev/controller"
    assert event["reportingInstance"] == "a"
    # Endpoints back: after failback.stableFor, traffic returns, with an Event.
    kube.apply(endpoint_slice("apps", "foo", [ENDPOINTS["east"]]))
    wait_for("apps/foo failed back", lambda: status(kube, "FailoverScheme", "foo", "apps").get("activeGroup") == 0, 20)
    (back, *_) = wait_for("a FailedBack Event", lambda: events(kube, "apps", "FailedBack", "foo"), 10)
    assert back["type"] == "Normal"


def test_failback_after_the_endpoints_return_waits_for_stable_for(federation: Federation):
    kube = federation.east
    # A primary its checks found Healthy (run alone, this test meets a controller that
    # has not checked anything yet: a target with no verdict has no recovery to damp).
    wait_for("east's checks pass", lambda: any(
        t["cluster"] == "east" and t["health"] == "Healthy"
        for t in status(kube, "FailoverScheme", "foo", "apps").get("targets", [])), 20)
    kube.apply(endpoint_slice("apps", "foo", []))
    wait_for("apps/foo failed over", lambda: status(kube, "FailoverScheme", "foo", "apps").get("activeGroup") == 1, 20)
    kube.apply(endpoint_slice("apps", "foo", [ENDPOINTS["east"]]))
    back = time.monotonic()
    wait_for("apps/foo failed back", lambda: status(kube, "FailoverScheme", "foo", "apps").get("activeGroup") == 0, 20,
             every=0.05)
    stable_for = 2.0  # scheme()'s failback.stableFor
    assert time.monotonic() - back >= stable_for * 0.9


def test_a_scheme_the_schema_cannot_judge_is_invalid_naming_the_field(federation: Federation):
    kube = federation.east
    for name in ("east", "west"):
        federation.kube(name).apply(service("apps", "bar"))
        federation.kube(name).apply(endpoint_slice("apps", "bar", [ENDPOINTS[name]]))
    kube.apply(scheme("bar", [["west"], ["nowhere"]]))
    st = wait_for("apps/bar Invalid",
                  lambda: (s := status(kube, "FailoverScheme", "bar", "apps")).get("state") == "Invalid" and s, 20)
    assert 'spec.failoverGroups[1].priorityGroup[0].cluster: unknown cluster "nowhere"' in st["message"], st
    (event, *_) = wait_for("an Invalid Event", lambda: events(kube, "apps", "Invalid", "bar"), 10)
    assert "nowhere" in event["note"]
    # Fixed: accepted, with an Event saying so.
    kube.apply(scheme("bar", [["west"]]))
    wait_for("apps/bar Accepted once fixed",
             lambda: status(kube, "FailoverScheme", "bar", "apps").get("state") == "Accepted", 20)
    wait_for("an Accepted Event", lambda: events(kube, "apps", "Accepted", "bar"), 10)
    # The other scheme was served all along.
    assert status(kube, "FailoverScheme", "foo", "apps")["state"] == "Accepted"


def timestamp(text: str) -> datetime.datetime:
    """An RFC 3339 time as the API writes it (fractions up to nanoseconds)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    assert m, text
    fraction = (m.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{fraction}{zone}")


def certificate(pem: bytes) -> str:
    return subprocess.run(["openssl", "x509", "-noout", "-text"], input=pem, capture_output=True,
                          check=True).stdout.decode()


def verified(ca: Path, pem: bytes) -> bool:
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca)], input=pem, capture_output=True).returncode == 0


def mtls_secret(federation: Federation, cluster: str, mount: str = "gateway") -> dict[str, Any] | None:
    return federation.kube(cluster).get_opt("Secret", f"detour-mtls-{mount}", MEMBER_NS)


def mtls_data(federation: Federation, cluster: str) -> dict[str, bytes]:
    """The files of both of `cluster`'s Secrets; each file is in the Secret of its mount only."""
    data: dict[str, bytes] = {}
    for mount, roles in (("gateway", ("gateway",)), ("client", ("envoy", "table"))):
        secret = mtls_secret(federation, cluster, mount)
        assert secret, f"detour-mtls-{mount} missing in {cluster}"
        files = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        # The gateway's key is never where only a client needs its own, nor the other way.
        assert set(files) == {"ca.crt", "ca.json"} | {f"{r}.{x}" for r in roles for x in ("crt", "key", "json")}, \
            (mount, sorted(files))
        data.update(files)
    return data


def test_mtls_secrets_appear_in_every_member_cluster_and_are_renewed(federation: Federation):
    first = {}
    for cluster in ("east", "west", "south"):
        wait_for(f"detour-mtls-client in {cluster}", lambda: mtls_secret(federation, cluster, "client"), 20)
        secret = wait_for(f"detour-mtls-gateway in {cluster}", lambda: mtls_secret(federation, cluster), 20)
        data = mtls_data(federation, cluster)
        assert data["ca.crt"] == (federation.certs / "ca.crt").read_bytes()
        for role in ("gateway", "envoy", "table"):
            assert verified(federation.certs / "ca.crt", data[f"{role}.crt"]), (cluster, role)
        assert f"IP Address:{GATEWAYS[cluster]}" in certificate(data["gateway.crt"])
        annotations = secret["metadata"]["annotations"]
        not_before = timestamp(annotations["detour.dev/not-before"])
        not_after = timestamp(annotations["detour.dev/not-after"])
        assert 0 < (not_after - not_before).total_seconds() <= CERT_LIFETIME_S
        assert secret["metadata"]["labels"]["detour.dev/member-cluster"] == cluster
        first[cluster] = (annotations["detour.dev/not-before"], data["gateway.crt"])
    # Two thirds into their lifetime, every Secret is written again with new certificates.
    for cluster, (not_before, gateway) in first.items():
        renewed = wait_for(
            f"detour-mtls-gateway of {cluster} renewed",
            lambda: (s := mtls_secret(federation, cluster))
            and s["metadata"]["annotations"]["detour.dev/not-before"] != not_before and s,
            CERT_LIFETIME_S + 10,
        )
        fresh = base64.b64decode(renewed["data"]["gateway.crt"])
        assert fresh != gateway and verified(federation.certs / "ca.crt", fresh)
    # In west and south, detour wrote through the RBAC `detour cluster register` grants.
    assert any(e["user"]["username"] == f"system:serviceaccount:{MEMBER_NS}:detour-member"
               and e["objectRef"].get("name") == "detour-mtls-client" and e["responseStatus"]["code"] < 300
               for e in federation.clusters["west"].audit())


# --- two replicas ------------------------------------------------------------------------


def lease(federation: Federation) -> dict[str, Any]:
    return federation.east.get("Lease", LEASE, CONTROLLER_NS)["spec"]


def writes(federation: Federation, replica: str, since: float = 0.0) -> list[dict[str, Any]]:
    """Writes the API server accepted from `replica` at or after `since` (epoch
    seconds), from its audit log."""
    user = f"detour-{replica}"
    found = []
    for e in federation.clusters["east"].audit():
        if e["user"]["username"] != user or e["responseStatus"]["code"] >= 400:
            continue
        at = timestamp(e["requestReceivedTimestamp"]).timestamp()
        if at >= since:
            found.append(e)
    return found


def leader_metric(controller: Controller) -> float | None:
    return controller.metric("detour_kube_leader")


def test_two_replicas_one_leader_and_a_hand_over_within_the_lease_duration(federation: Federation):
    kube = federation.east
    a = federation.controllers["a"]
    wait_for("replica a holds the Lease", lambda: lease(federation).get("holderIdentity") == "a", 10)
    b = federation.replica("b")
    wait_for("replica b serving", lambda: leader_metric(b) == 0, 20)
    time.sleep(2 * RETRY_PERIOD_S)
    assert lease(federation)["holderIdentity"] == "a"
    assert leader_metric(a) == 1 and leader_metric(b) == 0
    assert writes(federation, "a"), "the leader wrote status, Events, the Lease"
    assert not writes(federation, "b"), "a follower writes nothing"

    # The leader freezes (a stopped VM, a long GC pause): it can renew nothing. Something
    # changes meanwhile, which only a leader writes.
    a.process.signal(signal.SIGSTOP)
    frozen = time.time()
    kube.apply(endpoint_slice("apps", "foo", []))
    wait_for("replica b takes the Lease over", lambda: lease(federation).get("holderIdentity") == "b",
             LEASE_DURATION_S + RETRY_PERIOD_S + 5, every=0.1)
    # When b took it, as b wrote it (the same machine's clock as the audit log's).
    took_over = timestamp(lease(federation)["acquireTime"]).timestamp()
    assert took_over - frozen <= LEASE_DURATION_S + RETRY_PERIOD_S + SLACK_S, took_over - frozen
    wait_for("the new leader writes the failover",
             lambda: status(kube, "FailoverScheme", "foo", "apps").get("activeGroup") == 1, 15)
    assert any(e["objectRef"]["resource"] == "failoverschemes" and e["objectRef"].get("subresource") == "status"
               for e in writes(federation, "b"))

    # The old leader wakes up: it lost the Lease and must write nothing, although it
    # was leading when it froze and there is something to write (the failback).
    a.process.signal(signal.SIGCONT)
    kube.apply(endpoint_slice("apps", "foo", [ENDPOINTS["east"]]))
    wait_for("replica a knows it follows", lambda: leader_metric(a) == 0, 10)
    wait_for("the failback written by b",
             lambda: status(kube, "FailoverScheme", "foo", "apps").get("activeGroup") == 0, 20)
    time.sleep(2 * RETRY_PERIOD_S)
    late = writes(federation, "a", since=took_over)
    assert not late, [(e["verb"], e["objectRef"], e["requestReceivedTimestamp"]) for e in late]
    assert lease(federation)["holderIdentity"] == "b"

    # The leader crashes: the other replica takes over within the lease duration.
    b.process.kill()
    killed = time.time()
    wait_for("replica a takes the Lease back", lambda: lease(federation).get("holderIdentity") == "a",
             LEASE_DURATION_S + RETRY_PERIOD_S + 5, every=0.1)
    taken_back = timestamp(lease(federation)["acquireTime"]).timestamp()
    assert taken_back - killed <= LEASE_DURATION_S + RETRY_PERIOD_S + SLACK_S, taken_back - killed
    kube.apply(endpoint_slice("apps", "foo", []))
    wait_for("the new leader writes",
             lambda: status(kube, "FailoverScheme", "foo", "apps").get("activeGroup") == 1, 15)
    assert writes(federation, "a", since=killed)


def cluster_metric(controller: Controller, name: str, cluster: str) -> float | None:
    """The value of a metric labelled with one member cluster, if exported."""
    prefix = f'{name}{{cluster="{cluster}"}} '
    for line in controller.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.split()[1])
    return None


def test_a_table_past_max_table_bytes_is_in_the_member_clusters_status_with_an_event(federation: Federation):
    """What an operator of a growing federation sees in Kubernetes before and when a
    cluster's table outgrows the filters' maxTableBytes: the MemberCluster's status and
    an Event at each line crossed (the status API and metrics say the same)."""
    kube = federation.east
    leader = next(c for c in federation.controllers.values() if c.process.alive())
    table_bytes = wait_for("the leader's size of east's table",
                           lambda: cluster_metric(leader, "detour_table_bytes", "east"), 20)
    for c in federation.controllers.values():
        c.process.stop()
    # East's table as it is now is 85% of the limit; one more scheme on east takes it over.
    limit = math.ceil(table_bytes / 0.85)
    c = federation.replica("c", "--max-table-bytes", str(limit))
    wait_for("replica c leads", lambda: lease(federation).get("holderIdentity") == "c",
             LEASE_DURATION_S + RETRY_PERIOD_S + 5)

    near = wait_for("east's table near the limit in its status",
                    lambda: status(kube, "MemberCluster", "east").get("table"), 30)
    assert near["served"] is True, near
    assert 80 < near["percentOfLimit"] <= 100, near
    assert f"maxTableBytes ({limit})" in near["message"], near
    (event, *_) = wait_for("a TableNearLimit Event on MemberCluster east",
                           lambda: [e for e in events(kube, "default", "TableNearLimit", "east")
                                    if e["reportingInstance"] == "c"], 10)
    assert event["type"] == "Warning" and event["regarding"]["kind"] == "MemberCluster", event
    assert status(kube, "MemberCluster", "west").get("table") is None, "west's table is small"

    # One more scheme whose primary runs in east.
    for name in ("east", "west"):
        federation.kube(name).apply(service("apps", "baz"))
        federation.kube(name).apply(endpoint_slice("apps", "baz", [ENDPOINTS[name]]))
    kube.apply(scheme("baz", [["west"]]))
    over = wait_for("east's table refused in its status",
                    lambda: (t := status(kube, "MemberCluster", "east").get("table")) and not t["served"] and t,
                    30)
    assert over["percentOfLimit"] > 100, over
    assert "it is not served and the last good table stays" in over["message"], over
    (event, *_) = wait_for("a TableRefused Event on MemberCluster east",
                           lambda: [e for e in events(kube, "default", "TableRefused", "east")
                                    if e["reportingInstance"] == "c"], 10)
    assert event["type"] == "Warning", event
    assert cluster_metric(c, "detour_tables_refused_total", "east") >= 1
    with urllib.request.urlopen(f"http://{c.ops}/v1/status", timeout=5) as r:
        clusters = {m["name"]: m for m in json.load(r)["clusters"]}
    assert "not served" in clusters["east"]["tableWarning"], clusters["east"]
    # Still Accepted: the cluster itself is fine, and its last good table is served.
    assert status(kube, "MemberCluster", "east")["state"] == "Accepted"


def trusted_cas(federation: Federation, cluster: str) -> list[str]:
    """The CA certificates both of `cluster`'s Secrets give their Envoys to trust. The
    controller writes the two Secrets one after the other, so a reader may see them
    between the two writes: then they disagree, and this says so instead of a list any
    wait could accept."""
    bundles = set()
    for mount in ("gateway", "client"):
        secret = mtls_secret(federation, cluster, mount)
        if not secret:  # not issued yet (a controller that just started)
            return [f"(detour-mtls-{mount} missing in {cluster})"]
        bundles.add(base64.b64decode(secret["data"]["ca.crt"]).decode())
    if len(bundles) != 1:
        return [f"({cluster}'s two Secrets trust different CAs)"]
    (bundle,) = bundles
    return ["-----BEGIN" + part for part in bundle.split("-----BEGIN")[1:]]


def pem(path: Path) -> str:
    return path.read_text()


def test_a_change_of_ca_reaches_every_member_clusters_secrets(federation: Federation):
    """`certs init --ca-change begin|switch|finish` on the directory the leader issues
    from (in Kubernetes, the mounted Secret the operator updates): each step reaches
    every member cluster's Secrets without a restart, so that every Envoy always trusts
    the CA of what its peers present."""
    certs = federation.certs
    config = federation.dir / "config"
    old = pem(certs / "ca.crt")

    def step(change: str) -> None:
        detour("certs", "init", "--config", str(config), "--out", str(certs), "--ca-change", change)

    step("begin")
    new = pem(certs / "ca-next.crt")
    for cluster in ("east", "west", "south"):
        wait_for(f"{cluster} trusts the current and the next CA",
                 lambda: sorted(trusted_cas(federation, cluster)) == sorted([old, new]), 20)
        # Still issued by the current CA: nobody trusts only the next one yet.
        assert verified(certs / "ca.crt", mtls_data(federation, cluster)["gateway.crt"]), cluster

    step("switch")
    assert pem(certs / "ca.crt") == new
    for cluster in ("east", "west", "south"):
        wait_for(f"{cluster}'s certificates issued by the new CA",
                 lambda: all(verified(certs / "ca.crt", mtls_data(federation, cluster)[f"{r}.crt"])
                             for r in ("gateway", "envoy", "table")), 20)
        # The old CA is still trusted, for peers that have not loaded theirs yet.
        assert sorted(trusted_cas(federation, cluster)) == sorted([old, new]), cluster

    step("finish")
    for cluster in ("east", "west", "south"):
        wait_for(f"{cluster} trusts the new CA alone",
                 lambda: trusted_cas(federation, cluster) == [new], 20)
        assert verified(certs / "ca.crt", mtls_data(federation, cluster)["gateway.crt"]), cluster
