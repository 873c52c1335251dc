"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests and benchmarks.

Started the way controller-runtime's envtest starts one: fresh certificates, a static
token for an administrator, RBAC authorization, and the ServiceAccount admission
plugin off (no service-account controller runs). A kube-controller-manager runs only its
garbage collector, so deleting an owner deletes its children. Every process is
tied to the test process with ``PR_SET_PDEATHSIG`` so nothing outlives a killed run.

    with ControlPlane.start(workdir) as cp:
        api = cp.api_client()
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import ipaddress
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
ADMIN_USER = "optiloop-test-admin"
T = TypeVar("T")


class ControlPlaneUnavailableError(RuntimeError):
    """The binaries are missing or a server would not start."""


def wait_for(condition: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the last error is reported on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; last error: {last_error!r}")
        time.sleep(interval)


def binaries_dir() -> Path:
    """Folder holding ``kube-apiserver`` and ``etcd``: ``KUBEBUILDER_ASSETS`` or the build cache."""
    proc = subprocess.run([str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneUnavailableError(
            proc.stderr.strip()
            or "the test control plane is not built: run `make install` (hack/build-control-plane.sh)"
        )
    return Path(proc.stdout.strip())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # 1 == PR_SET_PDEATHSIG: the kernel sends SIGTERM to the child when the test process dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _write_certificates(directory: Path, extra_ips: Sequence[str] = ()) -> tuple[Path, Path, Path, Path, Path]:
    """A CA, a serving certificate for 127.0.0.1 (and ``extra_ips``, such as a node's address and the
    ``kubernetes`` Service's ClusterIP) signed by it, and a service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    def pem_key(key: Any) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "optiloop-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(serving_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.DNSName("kubernetes.default.svc.cluster.local"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    paths = {
        "ca.crt": ca_cert.public_bytes(serialization.Encoding.PEM),
        "apiserver.crt": serving_cert.public_bytes(serialization.Encoding.PEM),
        "apiserver.key": pem_key(serving_key),
        "sa.key": pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for name, content in paths.items():
        (directory / name).write_bytes(content)
        (directory / name).chmod(0o600)
    return (
        directory / "ca.crt",
        directory / "apiserver.crt",
        directory / "apiserver.key",
        directory / "sa.key",
        directory / "sa.pub",
    )


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _spawn(name: str, argv: list[str], workdir: Path, prefix: Sequence[str] = ()) -> _Process:
    """Start ``argv`` (after ``prefix``, such as an ``nsenter`` into a node's namespaces), logging to
    ``workdir/<name>.log``."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [*prefix, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    return _Process(name, popen, log)


def _etcd_argv(bins: Path, data_dir: Path, client_url: str, peer_url: str) -> list[str]:
    """etcd for a test: one member, data in ``data_dir``, no fsync (test data is thrown away)."""
    return [
        str(bins / "etcd"),
        "--name=optiloop-test",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=optiloop-test={peer_url}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def _apiserver_argv(
    bins: Path,
    workdir: Path,
    *,
    issuer_url: str,
    etcd_url: str,
    bind_address: str,
    advertise_address: str,
    port: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """kube-apiserver for a test: the certificates and tokens of ``workdir/pki`` (written by
    :func:`_write_certificates`), RBAC, and an audit log of every request without bodies (so tests
    can see which verbs a client really used); ``extra`` flags come last."""
    certs = workdir / "pki"
    audit_policy = workdir / "audit-policy.yaml"
    audit_policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n"
    )
    return [
        str(bins / "kube-apiserver"),
        f"--advertise-address={advertise_address}",
        f"--bind-address={bind_address}",
        f"--secure-port={port}",
        f"--etcd-servers={etcd_url}",
        f"--cert-dir={certs}",
        f"--tls-cert-file={certs / 'apiserver.crt'}",
        f"--tls-private-key-file={certs / 'apiserver.key'}",
        f"--client-ca-file={certs / 'ca.crt'}",
        f"--token-auth-file={certs / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        # Room for a drift monitor Service per resource in the scale benchmark.
        "--service-cluster-ip-range=10.96.0.0/16",
        f"--service-account-issuer={issuer_url}",
        f"--service-account-key-file={certs / 'sa.pub'}",
        f"--service-account-signing-key-file={certs / 'sa.key'}",
        f"--audit-policy-file={audit_policy}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-mode=blocking",
        "--profiling=false",
        "--v=1",
        *extra,
    ]


def _write_kubeconfig(path: Path, url: str, ca: Path, user: str, token: str) -> Path:
    """A kubeconfig (mode 0600) that reaches ``url`` as ``user`` with ``token``."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "optiloop-test", "cluster": {"server": url, "certificate-authority": str(ca)}}],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": "optiloop-test", "context": {"cluster": "optiloop-test", "user": user}}],
                "current-context": "optiloop-test",
            }
        )
    )
    path.chmod(0o600)
    return path


def _write_pki(workdir: Path, extra_ips: Sequence[str] = ()) -> tuple[Path, str]:
    """Certificates (see :func:`_write_certificates`) and a static token for the administrator in
    ``workdir/pki``; returns the CA's path and the token."""
    certs = workdir / "pki"
    certs.mkdir(exist_ok=True)
    ca, *_ = _write_certificates(certs, extra_ips)
    token = secrets.token_hex(24)
    tokens = certs / "tokens.csv"
    tokens.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    tokens.chmod(0o600)
    return ca, token


def _controller_manager_argv(
    bins: Path, workdir: Path, kubeconfig: Path, port: int, extra: Sequence[str] = ()
) -> list[str]:
    """kube-controller-manager for a test, as the administrator of ``kubeconfig``, without leader
    election; ``extra`` flags (``--controllers=...``) come last."""
    return [
        str(bins / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'pki'}",
        "--concurrent-gc-syncs=5",
        "--v=1",
        *extra,
    ]


@dataclass
class ControlPlane:
    """A running etcd and kube-apiserver; ``url``, ``token`` and ``ca_file`` reach the API as admin."""

    workdir: Path
    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    version: str
    processes: list[_Process] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, timeout: float = 90.0) -> ControlPlane:
        """Start etcd and kube-apiserver on free loopback ports and wait until the API is ready."""
        bins = binaries_dir()
        workdir.mkdir(parents=True, exist_ok=True)
        ca, token = _write_pki(workdir)

        processes: list[_Process] = []
        try:
            etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            etcd = _spawn(
                "etcd", _etcd_argv(bins, workdir / "etcd-data", etcd_url, f"http://127.0.0.1:{etcd_peer_port}"), workdir
            )
            processes.append(etcd)
            wait_for(lambda: _http_ok(f"{etcd_url}/health", etcd), timeout, what=f"etcd health at {etcd_url}")

            url = f"https://127.0.0.1:{api_port}"
            argv = _apiserver_argv(
                bins,
                workdir,
                issuer_url=url,
                etcd_url=etcd_url,
                bind_address="127.0.0.1",
                advertise_address="127.0.0.1",
                port=api_port,
                extra=["--disable-admission-plugins=ServiceAccount", "--allow-privileged=false"],
            )
            apiserver = _spawn("kube-apiserver", argv, workdir)
            processes.append(apiserver)
            context = ssl.create_default_context(cafile=str(ca))
            wait_for(
                lambda: _http_ok(f"{url}/readyz", apiserver, token, context),
                timeout,
                interval=0.25,
                what=f"kube-apiserver /readyz at {url}",
            )
            version = _http_json(f"{url}/version", token, context)["gitVersion"]
        except BaseException:
            for proc in reversed(processes):
                proc.stop()
            raise

        kubeconfig = _write_kubeconfig(workdir / "kubeconfig", url, ca, ADMIN_USER, token)
        if (bins / "kube-controller-manager").exists():
            # Only the garbage collector: owner references delete children as in a cluster, while
            # Jobs and Deployments are left to the tests (no Job controller fights their stand-in).
            argv = _controller_manager_argv(
                bins, workdir, kubeconfig, free_port(), ["--controllers=garbage-collector-controller"]
            )
            processes.append(_spawn("kube-controller-manager", argv, workdir))
        return cls(workdir, url, token, ca, kubeconfig, version, processes)

    def stop(self) -> None:
        """Stop the controller-manager, the API server, then etcd."""
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` authenticated with ``token`` (the admin's by default)."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": f"Bearer {token or self.token}"}
        return client.ApiClient(configuration)

    def kubeconfig_for(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig for ``namespace/account`` with a fresh token from the TokenRequest API."""
        from kubernetes import client

        token = (
            client.CoreV1Api(self.api_client())
            .create_namespaced_service_account_token(account, namespace, {"spec": {"expirationSeconds": 7200}})
            .status.token
        )
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"][0]["user"] = {"token": token}
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of one server's log (``etcd``, ``kube-apiserver``, ``kube-controller-manager``)."""
        return next((p.tail(lines) for p in self.processes if p.name == name), f"{name} is not running")

    def audit_events(self, user: str) -> list[dict[str, Any]]:
        """The audit log's completed requests made by ``user`` (for example a service account's
        ``system:serviceaccount:<namespace>:<name>``)."""
        import json

        events = []
        with (self.workdir / "audit.log").open() as log:
            for line in log:
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete" and event.get("user", {}).get("username") == user:
                    events.append(event)
        return events

    def get_json(self, path: str) -> Any:
        """GET ``path`` on the API server as admin and decode the JSON answer."""
        return _http_json(f"{self.url}{path}", self.token, ssl.create_default_context(cafile=str(self.ca_file)))


def _http_ok(url: str, proc: _Process, token: str | None = None, context: ssl.SSLContext | None = None) -> bool:
    if proc.popen.poll() is not None:
        raise ControlPlaneUnavailableError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return bool(response.status == 200)


def _http_json(url: str, token: str, context: ssl.SSLContext) -> Any:
    import json

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.load(response)
