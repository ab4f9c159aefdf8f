"""The pieces of `make test-kube`: a test PKI made with openssl, etcd and kube-apiserver
processes (built by `make kube`), a small client of the Kubernetes REST API, detour
controller processes, and east-west gateways that answer health checks over mTLS.

Every process dies with the test run (PR_SET_PDEATHSIG, and killed by its fixture), every
wait is bounded, and every address is on loopback."""

from __future__ import annotations

import base64
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[3]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET
KUBE_BIN = Path(os.environ.get("DETOUR_KUBE_BIN") or TARGET / "kube" / "bin")
DETOUR = Path(os.environ.get("DETOUR_BIN") or TARGET / "debug" / "detour")

# Field manager of what the test itself applies (detour's own is "detour").
TEST_MANAGER = "detour-e2e"


# --- time ------------------------------------------------------------------------------


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    """Calls `check` until it returns something truthy; fails naming `what` (and the last
    value or error seen) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (ApiError, OSError, KeyError, IndexError, TypeError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s (last seen: {last!r})")
        time.sleep(every)


# Below Linux's ephemeral range (32768+), so that no outgoing connection takes a port
# between the moment it is chosen and the moment its server binds it (as e2e/src/ports.rs).
_PORTS = range(20_000, 32_000)
_handed_out: set[tuple[str, int]] = set()
_next = [os.getpid() * 7919 % len(_PORTS)]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now on `host`, never handed out twice by this process."""
    for _ in range(len(_PORTS)):
        port = _PORTS[_next[0] % len(_PORTS)]
        _next[0] += 1
        if (host, port) in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add((host, port))
        return port
    raise AssertionError(f"no free port on {host}")


# --- processes -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # The test run's death (even SIGKILL) takes its API servers and controllers along.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """A child process whose output goes to `log`; killed by `stop()`."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"==== {name}: {' '.join(self.argv)}\n".encode())
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                preexec_fn=_die_with_parent,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}; see {self.log}")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        if self.alive():
            self.popen.kill()
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        if self.alive():
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


# --- PKI -------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass
class Pki:
    """One test CA: it signs the API servers' serving certificate and the clients'
    certificates (`--client-ca-file`), and a ServiceAccount key pair per cluster."""

    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    def ca_data(self) -> str:
        return base64.b64encode(self.ca_crt.read_bytes()).decode()

    @classmethod
    def create(cls, dir: Path) -> "Pki":
        dir.mkdir(parents=True, exist_ok=True)
        pki = cls(dir)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(pki.ca_key), "-out", str(pki.ca_crt), "-days", "2",
            "-subj", "/CN=detour-kube-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )
        pki.issue("apiserver", "/CN=kube-apiserver",
                  ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"])
        pki.client("admin", "admin", ["system:masters"])
        return pki

    def issue(self, name: str, subject: str, extensions: list[str]) -> tuple[Path, Path]:
        crt, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        args = [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", subject,
            "-CA", str(self.ca_crt), "-CAkey", str(self.ca_key),
            "-addext", "basicConstraints=critical,CA:FALSE",
        ]
        for ext in extensions:
            args += ["-addext", ext]
        _openssl(*args)
        return crt, key

    def client(self, name: str, user: str, groups: list[str]) -> tuple[Path, Path]:
        """A client certificate: the API server takes CN as the user, O as groups."""
        subject = f"/CN={user}" + "".join(f"/O={g}" for g in groups)
        return self.issue(name, subject, ["extendedKeyUsage=clientAuth"])

    def service_account_key(self, cluster: str) -> Path:
        key = self.dir / f"sa-{cluster}.key"
        if not key.exists():
            _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
        return key


# --- the Kubernetes API ----------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: Any):
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: {status}: {message}")


# Where each kind the tests use lives: (API path prefix, plural, namespaced).
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Service": ("/api/v1", "services", True),
    "Secret": ("/api/v1", "secrets", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    "Event": ("/apis/events.k8s.io/v1", "events", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "FailoverScheme": ("/apis/detour.dev/v1alpha1", "failoverschemes", True),
    "MemberCluster": ("/apis/detour.dev/v1alpha1", "memberclusters", False),
}


def path_of(kind: str, name: str | None = None, namespace: str | None = None, sub: str | None = None) -> str:
    prefix, plural, namespaced = RESOURCES[kind]
    path = prefix
    if namespaced and namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class Kube:
    """A client of one API server, as one user (client certificate or bearer token)."""

    def __init__(self, server: str, ca: Path, cert: tuple[Path, Path] | None = None, token: str | None = None):
        self.server = server
        self.token = token
        # The API server's `Warning` headers, as kubectl prints them.
        self.warnings: list[str] = []
        self.tls = ssl.create_default_context(cafile=str(ca))
        if cert:
            self.tls.load_cert_chain(str(cert[0]), str(cert[1]))

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
                content_type: str = "application/json", accept: str = "application/json") -> Any:
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", accept)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, context=self.tls, timeout=30) as resp:
                text = resp.read()
                self.warnings += resp.headers.get_all("Warning") or []
                if "json" not in resp.headers.get("Content-Type", ""):
                    return text.decode(errors="replace")  # /readyz and the like
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise ApiError(method, path, e.code, parsed) from None
        return json.loads(text) if text else None

    # Shorthands by kind.
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        return self.request("GET", path_of(kind, name, namespace))

    def get_opt(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.get(kind, name, namespace)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, **query: str) -> list[dict[str, Any]]:
        return self.request("GET", path_of(kind, None, namespace), query=query or None)["items"]

    def create(self, obj: dict[str, Any], **query: str) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("POST", path_of(obj["kind"], None, meta.get("namespace")), obj, query=query or None)

    def apply(self, obj: dict[str, Any], manager: str = TEST_MANAGER) -> dict[str, Any]:
        """Server-side apply, as `kubectl apply --server-side` does."""
        meta = obj["metadata"]
        return self.request(
            "PATCH", path_of(obj["kind"], meta["name"], meta.get("namespace")), obj,
            query={"fieldManager": manager, "force": "true", "fieldValidation": "Strict"},
            content_type="application/apply-patch+yaml",
        )

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.request("DELETE", path_of(kind, name, namespace))

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A token of the ServiceAccount (TokenRequest API), as a kubelet gets for a pod."""
        review = self.request(
            "POST", path_of("ServiceAccount", service_account, namespace, "token"),
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}},
        )
        return review["status"]["token"]

    def ensure_namespace(self, name: str) -> None:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def kubeconfig(name: str, server: str, ca: Path, *, cert: tuple[Path, Path] | None = None,
               token: str | None = None) -> str:
    """A kubeconfig with everything inline (detour refuses file paths for members)."""
    b64 = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    user: dict[str, str] = {}
    if cert:
        user = {"client-certificate-data": b64(cert[0]), "client-key-data": b64(cert[1])}
    if token:
        user = {"token": token}
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    })


# --- etcd and kube-apiserver -----------------------------------------------------------


class Etcd:
    def __init__(self, dir: Path):
        self.port = free_port()
        peer = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process("etcd", [
            KUBE_BIN / "etcd", "--name", "test", "--data-dir", dir / "etcd",
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer}",
            # A test's data: durability is not worth the fsync time on a shared disk.
            "--unsafe-no-fsync", "--log-level", "warn",
        ], dir / "etcd.log")

    def wait_ready(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            self.process.check_alive()
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    return json.loads(r.read()).get("health") == "true"
            except OSError:
                return False
        wait_for("etcd healthy", healthy, timeout)


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
# Every write, and every refusal, with who made it: enough to say who wrote what, when.
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
# Every request of a ServiceAccount (reads too): a refusal by RBAC shows up.
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
"""


@dataclass
class ApiServer:
    """One kube-apiserver: a cluster of the federation. Several share one etcd, each
    under its own key prefix."""

    name: str
    pki: Pki
    dir: Path
    etcd: Etcd
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def audit_log(self) -> Path:
        return self.dir / f"{self.name}-audit.log"

    def start(self) -> "ApiServer":
        self.dir.mkdir(parents=True, exist_ok=True)
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        sa_key = self.pki.service_account_key(self.name)
        self.process = Process(f"kube-apiserver {self.name}", [
            KUBE_BIN / "kube-apiserver",
            "--etcd-servers", self.etcd.url, "--etcd-prefix", f"/{self.name}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port),
            "--tls-cert-file", self.pki.dir / "apiserver.crt",
            "--tls-private-key-file", self.pki.dir / "apiserver.key",
            "--client-ca-file", self.pki.ca_crt,
            "--authorization-mode", "RBAC",
            "--service-account-issuer", f"https://{self.name}.kube.test",
            "--service-account-key-file", sa_key,
            "--service-account-signing-key-file", sa_key,
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--audit-policy-file", policy, "--audit-log-path", self.audit_log,
            "--cert-dir", self.dir / "certs",
            # The `kubernetes` Service's endpoints would name the advertise address, which
            # may not be loopback; nothing here reaches the API through that Service.
            "--endpoint-reconciler-type", "none",
            "--profiling=false", "--enable-priority-and-fairness=false",
        ], self.dir / f"{self.name}.log")
        return self

    def admin(self) -> Kube:
        return Kube(self.server, self.pki.ca_crt, cert=(self.pki.dir / "admin.crt", self.pki.dir / "admin.key"))

    def as_user(self, cert: tuple[Path, Path]) -> Kube:
        return Kube(self.server, self.pki.ca_crt, cert=cert)

    def as_token(self, token: str) -> Kube:
        return Kube(self.server, self.pki.ca_crt, token=token)

    def kubeconfig(self, *, cert: tuple[Path, Path] | None = None, token: str | None = None) -> str:
        if cert is None and token is None:
            cert = (self.pki.dir / "admin.crt", self.pki.dir / "admin.key")
        return kubeconfig(self.name, self.server, self.pki.ca_crt, cert=cert, token=token)

    def wait_ready(self, timeout: float = 120) -> None:
        assert self.process
        admin = self.admin()

        def ready() -> bool:
            assert self.process
            self.process.check_alive()
            try:
                return admin.request("GET", "/readyz", accept="*/*") == "ok"
            except (ApiError, OSError):
                return False
        try:
            wait_for(f"kube-apiserver {self.name} ready", ready, timeout, every=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.process.tail()}") from None

    def audit(self) -> list[dict[str, Any]]:
        """The audit log's events so far."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process:
            self.process.stop()


# --- east-west gateways --------------------------------------------------------------


class Gateway:
    """A member cluster's east-west gateway as far as health checks go: HTTPS with the
    gateway certificate `detour certs init` issued, a client certificate from the
    federation CA required, and every check answered 200. It records the Host of every
    check."""

    def __init__(self, address: str, port: int, certs: Path, cluster: str):
        self.address = address
        self.hosts: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                gateway.hosts.append(self.headers.get("Host", ""))
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs / "clusters" / cluster / "gateway.crt",
                                certs / "clusters" / cluster / "gateway.key")
        context.load_verify_locations(certs / "ca.crt")
        context.verify_mode = ssl.CERT_REQUIRED
        self.server = ThreadingHTTPServer((address, port), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- detour ----------------------------------------------------------------------------


def detour(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DETOUR), *args], check=check, capture_output=True, text=True, timeout=60)


class Controller:
    """`detour serve --kubernetes`, one replica."""

    def __init__(self, name: str, dir: Path, kubeconfig_text: str, args: list[str], env: dict[str, str] | None = None):
        self.name = name
        dir.mkdir(parents=True, exist_ok=True)
        config = dir / f"{name}.kubeconfig"
        config.write_text(kubeconfig_text)
        config.chmod(0o600)
        self.ops = f"127.0.0.1:{free_port()}"
        self.process = Process(f"detour {name}", [
            DETOUR, "serve", "--kubernetes", "--identity", name,
            "--listen", f"127.0.0.1:{free_port()}", "--ops-listen", self.ops, *args,
        ], dir / f"{name}.log", env={"KUBECONFIG": str(config), "RUST_LOG": "info,detour=debug",
                                     "DETOUR_LOG_FORMAT": "text", **(env or {})})

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.ops}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled metric, if exported."""
        for line in self.metrics().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")


def parse_register(text: str) -> dict[str, list[dict[str, Any]]]:
    """`detour cluster register`'s output: its documents by where its comments say to
    apply them ("member" or "management")."""
    out: dict[str, list[dict[str, Any]]] = {"member": [], "management": []}
    where = None
    for chunk in text.split("\n---\n"):
        for line in chunk.splitlines():
            if line.startswith("# === Apply in member cluster"):
                where = "member"
            elif line.startswith("# === Apply in the management cluster"):
                where = "management"
        doc = yaml.safe_load(chunk)
        if doc:
            assert where, f"a document before any '=== Apply in' comment: {chunk}"
            out[where].append(doc)
    return out
