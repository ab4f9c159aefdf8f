"""Fixtures of `make test-kube`: one etcd, and kube-apiservers sharing it under distinct
key prefixes — `east` (the management cluster, where detour runs, and a member too),
`west` and `south` (member clusters registered by kubeconfig), and `helm` (a cluster of
its own for the chart's install, upgrade and uninstall)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from harness import DETOUR, KUBE_BIN, ROOT, ApiServer, Etcd, Kube, Pki, detour, wait_for

OUT = ROOT / "e2e" / "out" / "kube"
CLUSTERS = ("east", "west", "south", "helm")


def pytest_configure(config: pytest.Config) -> None:
    missing = [p for p in (KUBE_BIN / "kube-apiserver", KUBE_BIN / "etcd", DETOUR) if not p.exists()]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(map(str, missing))}: run `make kube build` first")


# The CRDs' tests first: they create (and delete again) documents named as the examples
# name them, east and west among them; then the controller's, then the chart's.
ORDER = ("test_crds.py", "test_controller.py", "test_helm.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return ORDER.index(name) if name in ORDER else len(ORDER)
    items.sort(key=rank)  # stable: the order within a file stays


@pytest.fixture(scope="session")
def out() -> Path:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    return OUT


@pytest.fixture(scope="session")
def pki(out: Path) -> Pki:
    return Pki.create(out / "pki")


@pytest.fixture(scope="session")
def clusters(out: Path, pki: Pki) -> Iterator[dict[str, ApiServer]]:
    etcd = Etcd(out)
    servers: dict[str, ApiServer] = {}
    try:
        etcd.wait_ready()
        for name in CLUSTERS:
            servers[name] = ApiServer(name, pki, out / name, etcd).start()
        # They start side by side: most of a start is waiting on etcd and on itself.
        with ThreadPoolExecutor(len(servers)) as pool:
            for f in [pool.submit(s.wait_ready) for s in servers.values()]:
                f.result()
        yield servers
    finally:
        for s in servers.values():
            s.stop()
        etcd.process.stop()


@pytest.fixture(scope="session")
def east(clusters: dict[str, ApiServer]) -> ApiServer:
    return clusters["east"]


def crd_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(detour("crds").stdout) if d]


def apply_crds(kube: Kube) -> list[dict]:
    crds = crd_documents()
    for crd in crds:
        kube.apply(crd)
    for crd in crds:
        name = crd["metadata"]["name"]

        def established() -> bool:
            conditions = kube.get("CustomResourceDefinition", name).get("status", {}).get("conditions", [])
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
        wait_for(f"CRD {name} established", established, 30)
    return crds


@pytest.fixture(scope="session")
def crds(east: ApiServer) -> list[dict]:
    """`detour crds` applied to the management cluster."""
    return apply_crds(east.admin())

