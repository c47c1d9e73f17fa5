"""A real node for the local control plane: containerd + runc + CNI bridge, kubelet, kube-proxy.

`Node(base_dir, plane)` starts, in order:

1. a bridge of our own (`pm-brN`, 10.213.N.1/24; N is the first slot no other node on this
   machine holds, by a lock file) that the CNI `bridge` plugin attaches pods to. Pods get a
   route to that /24 and to the Service range only: their traffic stays on this machine;
2. a private containerd (own socket, root, state, runc root; the CRI plugin with
   `restrict_oom_score_adj`, the local sandbox image and the CNI conf/bin directories), and
   imports the local images (dev/images.py) into its `k8s.io` namespace;
3. the kubelet (config per ../shared/NOTES.md, "A real node": cgroupfs, no QoS cgroups, no
   swap check, cgroup v1 allowed), registering `NODE_NAME` with `--node-ip` on the bridge,
   optionally with the dedicated pool's label and taint; ready once the Node is Ready;
4. kube-proxy (iptables mode, Service NodePorts only on the bridge address);
5. the API server forwarded to the bridge (dev/forward.py) and written as the endpoint of the
   `kubernetes` Service, so pods reach it in-cluster (10.96.0.1:443) through kube-proxy.
   `expose(port)` forwards any other local service the same way (same port, bridge address).

`stop()` (also on Ctrl-C, a failed test, or interpreter exit) leaves nothing behind: pods are
deleted through the API so the kubelet tears their networks down, then kubelet and kube-proxy
stop (kube-proxy's rules are removed), whatever pod is left is killed by runc, the shims and
containerd stop, every mount under the node's directory is unmounted, leftover pod network
namespaces are removed and the bridge is deleted.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.api.v1alpha1.tiers import DEDICATED_POOL_LABEL, DEDICATED_POOL_VALUE
from penguinmails.devstack import images
from penguinmails.devstack.controlplane import NODE_NAME, SERVICE_CIDR, ControlPlane
from penguinmails.devstack.forward import Forwarder
from penguinmails.devstack.mounts import unmount_under
from penguinmails.devstack.ports import free_port
from penguinmails.devstack.process import PrivateService, Startable, find_binary
from penguinmails.devstack.stack import api_client_for

log = logging.getLogger(__name__)

BRIDGE_PREFIX = "pm-br"
SUBNET_PREFIX = "10.213"
"""Pod subnets 10.213.N.0/24, one per node slot N: a range nothing else on this machine uses."""
SLOTS = 8
LOCK_DIR = Path("/run/penguinmails")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_CACHE_DIR = Path("/var/lib/cni/results")
NO_REGISTRY_PORT = 9
"""The discard port on loopback, where nothing listens: containerd's proxy, so pulls fail here."""
DEDICATED_POOL_LABELS: Mapping[str, str] = {DEDICATED_POOL_LABEL: DEDICATED_POOL_VALUE}
DEDICATED_POOL_TAINT: Mapping[str, str] = {
    "key": DEDICATED_POOL_LABEL,
    "value": DEDICATED_POOL_VALUE,
    "effect": "NoSchedule",
}


class NodeError(RuntimeError):
    """The node could not start or stop; the message says what and quotes the log."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NodeError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()}")
    return result


@dataclass
class Bridge:
    """Our own Linux bridge and its /24, in a slot held by a lock file for the node's life."""

    slot: int
    lock: IO[bytes]

    @property
    def name(self) -> str:
        return f"{BRIDGE_PREFIX}{self.slot}"

    @property
    def subnet(self) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.0/24"

    @property
    def gateway(self) -> str:
        return f"{SUBNET_PREFIX}.{self.slot}.1"

    @classmethod
    def claim(cls) -> Bridge:
        """The first free slot; a bridge left in it by a killed run is deleted first."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        for slot in range(SLOTS):
            lock = (LOCK_DIR / f"node-{slot}.lock").open("wb")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            bridge = cls(slot, lock)
            bridge.delete()
            _run("ip", "link", "add", bridge.name, "type", "bridge")
            _run("ip", "addr", "add", f"{bridge.gateway}/24", "dev", bridge.name)
            _run("ip", "link", "set", bridge.name, "up")
            return bridge
        raise NodeError(f"all {SLOTS} node slots of this machine are in use ({LOCK_DIR})")

    def delete(self) -> None:
        if Path(f"/sys/class/net/{self.name}").exists():
            _run("ip", "link", "delete", self.name)

    def release(self) -> None:
        self.delete()
        self.lock.close()


def _cni_conflist(bridge: Bridge, ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": bridge.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge.name,
                "isGateway": True,
                # No default route and no masquerading: pods reach the bridge's /24 and the
                # Service range (kube-proxy), nothing beyond this machine.
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": bridge.subnet, "gateway": bridge.gateway}]],
                    "routes": [{"dst": SERVICE_CIDR}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


class Containerd(PrivateService):
    """A private containerd: its own socket, root, state and runc root; CRI for the kubelet.

    The port is the CRI streaming server's (exec, attach, port-forward), on the bridge address.
    """

    display_name = "containerd"
    error = NodeError
    bind_failure = re.compile(r"address already in use")
    poll_interval = 0.2

    def __init__(self, root: Path, bridge: Bridge, sandbox_image: str) -> None:
        super().__init__(root, root / "containerd.log", start_timeout=60.0, host=bridge.gateway)
        self.bridge = bridge
        self.sandbox_image = sandbox_image
        self.binary = find_binary(
            "containerd", env="PM_CONTAINERD", install="Debian: apt-get install containerd",
            error=NodeError,
        )  # fmt: skip

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    def _env(self) -> dict[str, str]:
        # Images come from dev/images.py only. A pod naming any other image must not make this
        # machine fetch it from the internet: every registry request goes to a proxy address
        # where nothing listens (Go's HTTP client does not even resolve the registry's name).
        blocked = f"http://127.0.0.1:{NO_REGISTRY_PORT}"
        env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env[name] = blocked
        return env

    @property
    def runc_root(self) -> Path:
        return self.root / "state" / "runc"

    def _prepare(self) -> None:
        super()._prepare()
        (self.root / "cni").mkdir(exist_ok=True)
        conflist = _cni_conflist(self.bridge, self.root / "cni-ipam")
        (self.root / "cni" / "10-penguinmails.conflist").write_text(json.dumps(conflist, indent=2))

    def _command(self, port: int) -> list[str]:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{self.root / "root"}"
state = "{self.root / "state"}"
# Ignore the machine's own drop-ins: this containerd is private.
imports = []
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{self.root / "opt"}"

[{cri}]
  sandbox_image = "{self.sandbox_image}"
  # root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj would make runc fail.
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "{self.bridge.gateway}"
  stream_server_port = "{port}"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{self.runc_root}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.root / "cni"}"
  max_conf_num = 1
"""
        path = self.root / "config.toml"
        path.write_text(config)
        return [self.binary, "--config", str(path)]

    def _ready(self) -> bool:
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def ctr(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _run("ctr", "--address", str(self.socket), "--namespace", "k8s.io", *argv)

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive))

    def shims(self) -> list[int]:
        """Process ids of the shims this containerd started (their argv names its socket)."""
        found = []
        address = str(self.socket)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and address.encode() in argv:
                found.append(int(proc.name))
        return found

    def kill_containers(self) -> None:
        """Every container runc still runs for us, killed and deleted (after a failed drain)."""
        if not self.runc_root.is_dir():
            return
        for namespace_root in self.runc_root.iterdir():
            listing = _run("runc", "--root", str(namespace_root), "list", "-q", check=False)
            for container in listing.stdout.split():
                _run("runc", "--root", str(namespace_root), "delete", "--force", container,
                     check=False)  # fmt: skip

    def _cleanup(self) -> None:
        shims = self.shims()
        for pid in shims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Gone, not just signalled: their sockets are removed afterwards only once dead.
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in shims) and time.monotonic() < deadline:
            time.sleep(0.1)


class Kubelet(PrivateService):
    """The kubelet, registering `NODE_NAME`; ready once the API server says the Node is Ready."""

    display_name = "kubelet"
    error = NodeError
    bind_failure = re.compile(r"address already in use")
    poll_interval = 0.5

    def __init__(
        self,
        root: Path,
        *,
        binary: Path,
        kubeconfig: Path,
        admin_kubeconfig: Path,
        containerd: Containerd,
        bridge: Bridge,
        labels: Mapping[str, str],
        taints: list[Mapping[str, str]],
    ) -> None:
        super().__init__(root, root / "kubelet.log", start_timeout=180.0, host=bridge.gateway)
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.containerd = containerd
        self.bridge = bridge
        self.labels = labels
        self.taints = taints
        self._api = api_client_for(admin_kubeconfig, connections=2)

    def _command(self, port: int) -> list[str]:
        endpoint = f"unix://{self.containerd.socket}"
        resolv = self.root / "resolv.conf"
        # Pods get no nameserver from the machine: their traffic stays on the bridge.
        resolv.write_text("# the local node has no cluster DNS\noptions ndots:1\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.bridge.gateway,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 0,
            # The API server calls the kubelet (logs, exec) without a client certificate; the
            # kubelet listens on our own bridge only.
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            # What this kind of machine needs (../shared/NOTES.md, "A real node").
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "failCgroupV1": False,
            "resolvConf": str(resolv),
            "podLogsDir": str(self.root / "pod-logs"),
            "clusterDomain": "cluster.local",
            # Local images are never pulled again: no image garbage collection.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # A busy shared disk must not evict the tests' pods.
            "evictionHard": {
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "memory.available": "50Mi",
            },
            "registerWithTaints": [dict(t) for t in self.taints],
            "serializeImagePulls": False,
            # No kubelet chains in the machine's iptables (they would outlive it).
            "makeIPTablesUtilChains": False,
            "nodeStatusReportFrequency": "10s",
        }
        path = self.root / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config))
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        argv = [
            str(self.binary),
            f"--config={path}",
            f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={self.root / 'root'}",
            f"--cert-dir={self.root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={self.bridge.gateway}",
            "--v=1",
        ]
        if labels:
            argv.append(f"--node-labels={labels}")
        return argv

    def _ready(self) -> bool:
        try:
            node = client.CoreV1Api(self._api).read_node(NODE_NAME)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        conditions = {c.type: c.status for c in (node.status.conditions or [])}
        return conditions.get("Ready") == "True"

    def _cleanup(self) -> None:
        self._api.close()


class KubeProxy(PrivateService):
    """kube-proxy in iptables mode; its port is the health endpoint on loopback."""

    display_name = "kube-proxy"
    error = NodeError
    bind_failure = re.compile(r"address already in use")
    poll_interval = 0.2

    def __init__(self, root: Path, *, binary: Path, kubeconfig: Path, bridge: Bridge) -> None:
        super().__init__(root, root / "kube-proxy.log", start_timeout=60.0)
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.bridge = bridge

    def _command(self, port: int) -> list[str]:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": self.bridge.subnet,
            "healthzBindAddress": f"127.0.0.1:{port}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # NodePorts on our bridge only: no route_localnet, nothing on the machine's NICs.
            "nodePortAddresses": [f"{self.bridge.gateway}/32"],
            # Resynced (and a flush of its chains, e.g. by another node's `--cleanup` on this
            # machine, detected) within seconds rather than the default 30 s.
            "iptables": {"localhostNodePorts": False, "syncPeriod": "5s"},
            # Leave the machine's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        path = self.root / "kube-proxy-config.yaml"
        path.write_text(yaml.safe_dump(config))
        return [str(self.binary), f"--config={path}", "--v=1"]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # our own URL on loopback
                f"http://127.0.0.1:{self.port}/healthz", timeout=2
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _cleanup(self) -> None:
        # Its chains in the machine's iptables go with it. `--cleanup` leaves KUBE-FIREWALL,
        # which it shares with kubelets (ours makes none); it is removed once empty.
        _run(str(self.binary), "--cleanup", check=False)
        for iptables in ("iptables", "ip6tables"):
            listing = _run(iptables, "-S", "KUBE-FIREWALL", check=False)
            if listing.returncode != 0 or len(listing.stdout.splitlines()) > 1:
                continue
            for chain in ("INPUT", "OUTPUT"):
                while (
                    _run(iptables, "-D", chain, "-j", "KUBE-FIREWALL", check=False).returncode == 0
                ):
                    pass
            _run(iptables, "-X", "KUBE-FIREWALL", check=False)


@dataclass
class Node(Startable):
    """A node of `plane` in `base_dir`; see the module docstring. `dedicated` registers it
    with the dedicated pool's label and taint (tests can also toggle them: `set_dedicated`)."""

    base_dir: Path
    plane: ControlPlane
    dedicated: bool = False
    timings: dict[str, float] = field(init=False, default_factory=dict)
    bridge: Bridge | None = field(init=False, default=None)
    containerd: Containerd | None = field(init=False, default=None)
    kubelet: Kubelet | None = field(init=False, default=None)
    kube_proxy: KubeProxy | None = field(init=False, default=None)
    forwarders: list[Forwarder] = field(init=False, default_factory=list)

    drain_timeout: ClassVar[float] = 60.0

    @property
    def name(self) -> str:
        return NODE_NAME

    def start(self) -> Node:
        if self.plane.build_result is None:
            raise NodeError("start the control plane before the node")
        bins = self.plane.build_result.bin_dir
        try:
            began = time.monotonic()
            archives = images.build_all()
            for archive in archives:
                self.timings.update(archive.timings)
            self.timings["images"] = time.monotonic() - began
            self.base_dir.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            self.bridge = Bridge.claim()
            atexit.register(self.stop)
            self._remove_pod_networks()  # of a killed run that held the same slot
            self.containerd = Containerd(
                self.base_dir / "containerd", self.bridge, images.PAUSE_IMAGE_NAME
            ).start()
            for archive in archives:
                self.containerd.import_image(archive.path)
            self.timings["containerd start and image import"] = time.monotonic() - started
            started = time.monotonic()
            self.kubelet = Kubelet(
                self.base_dir / "kubelet",
                binary=bins / "kubelet",
                kubeconfig=self.plane.component_kubeconfigs["kubelet"],
                admin_kubeconfig=self.plane.kubeconfig,
                containerd=self.containerd,
                bridge=self.bridge,
                labels=DEDICATED_POOL_LABELS if self.dedicated else {},
                taints=[DEDICATED_POOL_TAINT] if self.dedicated else [],
            ).start()
            self.timings["kubelet until Ready"] = time.monotonic() - started
            started = time.monotonic()
            self.kube_proxy = KubeProxy(
                self.base_dir / "kube-proxy",
                binary=bins / "kube-proxy",
                kubeconfig=self.plane.component_kubeconfigs["kube-proxy"],
                bridge=self.bridge,
            ).start()
            self.timings["kube-proxy start"] = time.monotonic() - started
            self.expose(self.plane.api_port)
            self._publish_api_endpoint()
        except BaseException:
            self.stop()
            raise
        log.info(
            "node %s ready: %s",
            NODE_NAME,
            ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()),
        )
        return self

    def expose(self, port: int, *, udp: bool = False) -> str:
        """Forward the local service on 127.0.0.1:`port` to the bridge (TCP, or UDP); returns
        the address pods reach it at (same port). Stopped with the node."""
        if self.bridge is None:
            raise NodeError("start the node before exposing services to its pods")
        forwarder = Forwarder(
            self.base_dir / "forwarders", host=self.bridge.gateway, port=port, udp=udp
        )
        self.forwarders.append(forwarder)
        forwarder.start()
        return self.bridge.gateway

    def _publish_api_endpoint(self) -> None:
        """The `kubernetes` Service's EndpointSlice: the API server's port on the bridge."""
        assert self.bridge is not None
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "penguinmails-dev",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [self.bridge.gateway], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": self.plane.api_port, "protocol": "TCP"}],
        }
        with api_client_for(self.plane.kubeconfig, connections=1) as api:
            discovery = client.DiscoveryV1Api(api)
            try:
                discovery.create_namespaced_endpoint_slice("default", body)
            except ApiException as error:
                if error.status != 409:
                    raise
                discovery.replace_namespaced_endpoint_slice("kubernetes", "default", body)

    def set_dedicated(self, dedicated: bool) -> None:
        """Give the node the dedicated pool's label and taint, or take them away."""
        with api_client_for(self.plane.kubeconfig, connections=1) as api:
            core = client.CoreV1Api(api)
            node = core.read_node(NODE_NAME)
            taints = [t for t in (node.spec.taints or []) if t.key != DEDICATED_POOL_TAINT["key"]]
            body: dict[str, Any] = {
                "metadata": {
                    "labels": {
                        k: (v if dedicated else None) for k, v in DEDICATED_POOL_LABELS.items()
                    }
                },
                "spec": {
                    "taints": [api.sanitize_for_serialization(t) for t in taints]
                    + ([dict(DEDICATED_POOL_TAINT)] if dedicated else [])
                },
            }
            core.patch_node(NODE_NAME, body)

    def stop(self) -> None:
        """Drain, stop every process, unmount, remove pod networks and the bridge. Idempotent."""
        problems: list[str] = []

        def attempt(step: str, action: Any) -> None:
            try:
                action()
            except Exception as error:  # later steps must still run
                problems.append(f"{step}: {error}")

        if self.kubelet is not None and self.kubelet.running:
            attempt("drain", self._drain)
        for service in (self.kube_proxy, self.kubelet):
            if service is not None:
                attempt(f"stop {service.display_name}", service.stop)
        for forwarder in self.forwarders:
            attempt(f"stop {forwarder.log_path.stem}", forwarder.stop)
        self.forwarders.clear()
        if self.containerd is not None:
            attempt("kill containers", self.containerd.kill_containers)
            attempt("stop containerd", self.containerd.stop)
        attempt("unmount", self._unmount_all)
        if self.bridge is not None:
            attempt("pod networks", self._remove_pod_networks)
            attempt("bridge", self.bridge.release)
        attempt("leftovers", _remove_machine_leftovers)
        self.kube_proxy = self.kubelet = self.containerd = None
        self.bridge = None
        atexit.unregister(self.stop)
        if problems:
            raise NodeError("the node did not stop cleanly: " + "; ".join(problems))
        # Nothing is mounted under it any more (checked above): the unpacked images can go.
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def _drain(self) -> None:
        """Delete every pod on the node at once and wait until the kubelet tore their networks
        down (the CNI result cache of our network empties)."""
        with api_client_for(self.plane.kubeconfig, connections=1) as api:
            core = client.CoreV1Api(api)
            core.patch_node(NODE_NAME, {"spec": {"unschedulable": True}})
            pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}")
            for pod in pods.items:
                with contextlib.suppress(ApiException):
                    core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                    )
        deadline = time.monotonic() + self.drain_timeout
        while list(self._cni_results()) and time.monotonic() < deadline:
            time.sleep(0.5)

    def _cni_results(self) -> Iterator[Path]:
        if self.bridge is None or not CNI_CACHE_DIR.is_dir():
            return iter(())
        return CNI_CACHE_DIR.glob(f"{self.bridge.name}-*")

    def _remove_pod_networks(self) -> None:
        """Network namespaces of pods the kubelet did not tear down (it died, or timed out)."""
        if self.bridge is None:
            return
        for cached in list(self._cni_results()):
            with contextlib.suppress(OSError, ValueError):
                result = json.loads(cached.read_text()).get("result", {})
                for interface in result.get("interfaces", []):
                    netns = interface.get("sandbox")
                    if netns and Path(netns).exists():
                        _run("umount", netns, check=False)
                        Path(netns).unlink(missing_ok=True)
            cached.unlink(missing_ok=True)
            # containerd's loopback attachment of the same sandbox: cni-loopback-<id>-lo.
            sandbox = cached.name.removeprefix(f"{self.bridge.name}-").rpartition("-")[0]
            (CNI_CACHE_DIR / f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)

    def _unmount_all(self) -> None:
        unmount_under(self.base_dir)


def _remove_machine_leftovers() -> None:
    """What containerd, runc and the CNI plugins made outside the node's directory, once unused.

    rmdir refuses a directory that is not empty (or a cgroup still in use, e.g. by another
    node's containers), so only what nobody uses goes: the per-container cgroups under k8s.io
    in every hierarchy, the sockets of shims that are gone and their directory, the CNI cache
    and network-namespace directories.
    """
    shim_sockets = Path("/run/containerd/s")
    for path in shim_sockets.glob("*") if shim_sockets.is_dir() else []:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
            except OSError:
                pass
    for hierarchy in Path("/sys/fs/cgroup").glob("*/k8s.io"):
        for directory in [*hierarchy.glob("*/"), hierarchy]:
            with contextlib.suppress(OSError):
                directory.rmdir()
    for directory in (
        shim_sockets,
        shim_sockets.parent,
        CNI_CACHE_DIR,
        CNI_CACHE_DIR.parent,
        Path("/var/run/netns"),
    ):
        with contextlib.suppress(OSError):
            directory.rmdir()
