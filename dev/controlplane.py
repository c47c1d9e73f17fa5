"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler (and the kubelet and kube-proxy dev/node.py runs, from the same build).

The binaries are built from the upstream Go modules (see dev/controlplane/go.mod) into a cache
keyed by the hash of the module's inputs, so the many-minute cold build happens once per machine.
Each start gets a fresh temporary directory with its own certificates, service-account keys,
an admin token and a kubeconfig; `stop()` ends every process it started.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from penguinmails.devstack.buildlock import exclusive
from penguinmails.devstack.ports import free_port

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.36.3"
MODULE_DIR = Path(__file__).resolve().parent / "controlplane"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)
SERVICE_CIDR = "10.96.0.0/16"
NODE_NAME = "penguinmails-node"
"""The one node a local cluster may have (dev/node.py); its credentials are made at start."""
# The components that get a kubeconfig of their own: user name and groups of their token.
COMPONENT_USERS = {
    "kube-controller-manager": ("system:kube-controller-manager", ""),
    "kube-scheduler": ("system:kube-scheduler", ""),
    "kube-proxy": ("system:kube-proxy", ""),
    # The Node authorizer gives a kubelet exactly what its node and its pods need.
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
}


def cache_root() -> Path:
    """Where built binaries live: outside the work tree, so clean clones reuse them."""
    configured = os.environ.get("PM_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "penguinmails"


def _inputs_digest() -> str:
    """Hash of everything the build reads from the repository, plus the Go toolchain version."""
    digest = hashlib.sha256()
    files = [MODULE_DIR / "go.mod", MODULE_DIR / "go.sum", *sorted(MODULE_DIR.glob("cmd/*/*.go"))]
    for path in files:
        digest.update(path.relative_to(MODULE_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    go_version = subprocess.run(
        ["go", "version"], check=True, capture_output=True, text=True
    ).stdout
    digest.update(go_version.encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BuildResult:
    bin_dir: Path
    seconds: float
    cached: bool


def build() -> BuildResult:
    """Build the control-plane binaries unless an up-to-date build is cached."""
    bin_dir = cache_root() / "controlplane" / _inputs_digest()
    if all((bin_dir / name).is_file() for name in BINARIES):
        return BuildResult(bin_dir, 0.0, cached=True)
    with exclusive(bin_dir):
        if all((bin_dir / name).is_file() for name in BINARIES):
            return BuildResult(bin_dir, 0.0, cached=True)  # another process built it meanwhile
        return _build_into(bin_dir)


def _build_into(bin_dir: Path) -> BuildResult:
    started = time.monotonic()
    staging = bin_dir.with_name(bin_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    minor = KUBERNETES_VERSION.split(".")[1]
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly"}
    log.info("building the control plane %s (cold builds take many minutes)", KUBERNETES_VERSION)
    subprocess.run(
        [
            "go",
            "build",
            "-tags",
            "selinux,notest",
            "-ldflags",
            ldflags,
            "-o",
            str(staging) + "/",
            "./cmd/...",
        ],
        cwd=MODULE_DIR,
        env=env,
        check=True,
    )
    shutil.rmtree(bin_dir, ignore_errors=True)
    staging.rename(bin_dir)
    return BuildResult(bin_dir, time.monotonic() - started, cached=False)


def _write_private_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def write_kubeconfig(path: Path, server: str, token: str, ca_file: Path | None) -> None:
    """A kubeconfig for one user authenticated by a bearer token, trusting `ca_file`.

    Without a CA file (an existing cluster whose CA the tests do not know) TLS is not verified.
    """
    cluster: dict[str, object] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    else:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "penguinmails-dev", "cluster": cluster}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "penguinmails-dev",
                "context": {"cluster": "penguinmails-dev", "user": "admin"},
            }
        ],
        "current-context": "penguinmails-dev",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager in `base_dir`, reachable on 127.0.0.1."""

    base_dir: Path
    with_controller_manager: bool = True
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    api_port: int = field(init=False)
    admin_token: str = field(init=False)
    build_result: BuildResult | None = field(init=False, default=None)
    started_in: float = field(init=False, default=0.0)
    component_kubeconfigs: dict[str, Path] = field(init=False, default_factory=dict)
    """Per component (COMPONENT_USERS): a kubeconfig with its own token, written at start."""
    _processes: list[tuple[str, subprocess.Popen[bytes]]] = field(init=False, default_factory=list)

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def ca_file(self) -> Path:
        """The API server's self-signed serving certificate, which is its own CA."""
        return self.base_dir / "certs" / "apiserver.crt"

    def start(self) -> None:
        self.build_result = build()
        bins = self.build_result.bin_dir
        started = time.monotonic()
        try:
            self._start(bins)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started

    def _start(self, bins: Path) -> None:
        base = self.base_dir
        certs, logs = base / "certs", base / "logs"
        for directory in (certs, logs, base / "etcd"):
            directory.mkdir(parents=True, exist_ok=True)
        sa_key = certs / "service-account.key"
        _write_private_key(sa_key)
        self.admin_token = secrets.token_urlsafe(32)
        component_tokens = {name: secrets.token_urlsafe(32) for name in COMPONENT_USERS}
        lines = [f'{self.admin_token},admin,admin-uid,"system:masters"']
        for name, (user, groups) in COMPONENT_USERS.items():
            record = f"{component_tokens[name]},{user},{name}-uid"
            lines.append(f'{record},"{groups}"' if groups else record)
        tokens = certs / "tokens.csv"
        tokens.write_text("\n".join(lines) + "\n")
        tokens.chmod(0o600)

        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(bins / "etcd"),
                "--data-dir",
                str(base / "etcd"),
                "--client-url",
                f"http://127.0.0.1:{etcd_port}",
                "--peer-url",
                f"http://127.0.0.1:{etcd_peer}",
            ],
        )
        self.api_port = api_port
        self.server = f"https://127.0.0.1:{api_port}"
        apiserver_args = [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--cert-dir={certs}",
            f"--secure-port={api_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service's endpoint would be 127.0.0.1, which pods cannot reach:
            # a node writes its own (dev/node.py, the API server forwarded to its bridge).
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC",
            # The node's name does not resolve here: reach kubelets (logs, exec) by address.
            "--kubelet-preferred-address-types=InternalIP",
            f"--token-auth-file={tokens}",
            "--allow-privileged=true",
            "--storage-media-type=application/vnd.kubernetes.protobuf",
            "--v=1",
        ]
        if not self.with_controller_manager:
            # Without the token controller, the ServiceAccount admission plugin would refuse pods.
            apiserver_args.append("--disable-admission-plugins=ServiceAccount")
        self._spawn("kube-apiserver", apiserver_args)
        self._wait_ready()
        # Only now does the self-signed certificate exist, so the kubeconfig can pin it.
        self.kubeconfig = base / "admin.kubeconfig"
        write_kubeconfig(self.kubeconfig, self.server, self.admin_token, self.ca_file)
        for name, token in component_tokens.items():
            path = base / f"{name}.kubeconfig"
            write_kubeconfig(path, self.server, token, self.ca_file)
            self.component_kubeconfigs[name] = path

        # Without a scheduler, pods stay Pending unless they name their node.
        scheduler_config = self.component_kubeconfigs["kube-scheduler"]
        self._spawn(
            "kube-scheduler",
            [
                str(bins / "kube-scheduler"),
                f"--kubeconfig={scheduler_config}",
                f"--authentication-kubeconfig={scheduler_config}",
                f"--authorization-kubeconfig={scheduler_config}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--v=1",
            ],
        )
        if self.with_controller_manager:
            kcm_config = self.component_kubeconfigs["kube-controller-manager"]
            self._spawn(
                "kube-controller-manager",
                [
                    str(bins / "kube-controller-manager"),
                    f"--kubeconfig={kcm_config}",
                    f"--authentication-kubeconfig={kcm_config}",
                    f"--authorization-kubeconfig={kcm_config}",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={self.ca_file}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    f"--cert-dir={certs / 'kcm'}",
                    "--use-service-account-credentials=true",
                    # Namespaces of deleted tenants must go away quickly in tests.
                    "--concurrent-namespace-syncs=5",
                    "--v=1",
                ],
            )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_file = (self.base_dir / "logs" / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file.close()
        self._processes.append((name, process))

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.base_dir / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self, timeout: float = 120.0) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        request = urllib.request.Request(  # noqa: S310 - our own https:// URL
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self._processes:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {process.returncode}:\n{self.log_tail(name)}"
                    )
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise TimeoutError(
            f"kube-apiserver not ready after {timeout:.0f}s:\n{self.log_tail('kube-apiserver')}"
        )

    def stop(self) -> None:
        """Stop in reverse order of start; SIGKILL whatever ignores SIGTERM for 15 s."""
        for _name, process in reversed(self._processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self._processes.clear()
