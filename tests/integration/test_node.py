"""The local node (dev/node.py): it registers Ready, runs pods from the locally built image, and
the dedicated pool's label and taint decide where business/enterprise senders may run."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.devstack import images
from penguinmails.devstack.controlplane import KUBERNETES_VERSION
from penguinmails.devstack.node import NO_REGISTRY_PORT, Node
from tests.integration.conftest import Cluster, wait_for
from tests.unit.test_images import dockerfile_stages, final_stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def namespace(core: client.CoreV1Api, node: Node) -> Iterator[str]:
    name = f"node-test-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    # The ServiceAccount admission plugin refuses pods until the default account exists.
    wait_for(
        lambda: core.list_namespaced_service_account(name).items,
        what=f"the default ServiceAccount of {name}",
    )
    yield name
    core.delete_namespace(name)


def pod_manifest(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A pod of the penguinmails image with the sender's security settings."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": images.IMAGE_NAME,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            **spec,
        },
    }


def phase(core: client.CoreV1Api, namespace: str, name: str) -> str:
    return str(core.read_namespaced_pod(name, namespace).status.phase)


def scheduling(core: client.CoreV1Api, namespace: str, name: str) -> tuple[str, str] | None:
    """(status, reason) of the pod's PodScheduled condition, once the scheduler set it."""
    for condition in core.read_namespaced_pod(name, namespace).status.conditions or []:
        if condition.type == "PodScheduled":
            return str(condition.status), str(condition.reason or "")
    return None


def test_the_node_registers_ready(core: client.CoreV1Api, node: Node) -> None:
    registered = core.read_node(node.name)
    conditions = {c.type: c.status for c in registered.status.conditions}
    assert conditions["Ready"] == "True"
    assert registered.status.node_info.kubelet_version == KUBERNETES_VERSION
    assert registered.status.node_info.container_runtime_version.startswith("containerd://")
    addresses = {a.type: a.address for a in registered.status.addresses}
    assert node.bridge is not None
    assert addresses["InternalIP"] == node.bridge.gateway


def test_a_pod_of_the_local_image_runs_to_completion_and_its_logs_are_readable(
    core: client.CoreV1Api, cluster: Cluster, namespace: str, node: Node
) -> None:
    script = (
        "import os, sys, penguinmails.sender.engine, penguinmails.operator.__main__; "
        "print('python', '%d.%d' % sys.version_info[:2]); "
        "print('uid', os.getuid(), 'gid', os.getgid()); "
        "print('prefix', sys.prefix)"
    )
    core.create_namespaced_pod(namespace, pod_manifest("hello", ["python", "-c", script]))
    wait_for(
        lambda: phase(core, namespace, "hello") in ("Succeeded", "Failed"),
        timeout=180,
        what="the pod to finish",
    )
    kubectl = [str(cluster.kubectl), "--kubeconfig", str(cluster.kubeconfig)]
    logs = subprocess.run(
        [*kubectl, "logs", "--namespace", namespace, "hello"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert phase(core, namespace, "hello") == "Succeeded", logs
    # The image is what the Dockerfile describes: its Python, its user, the wheel in /opt/venv.
    python_image = dict(r.split("=", 1) for i, r in dockerfile_stages()[0] if i == "ARG")
    dockerfile_python = re.search(r"python:(\d+\.\d+)", python_image["PYTHON_IMAGE"])
    assert dockerfile_python is not None
    user = final_stage()["USER"][-1].split(":")
    assert logs.splitlines() == [
        f"python {dockerfile_python.group(1)}",
        f"uid {user[0]} gid {user[1]}",
        f"prefix {images.VENV}",
    ]


def test_the_imported_image_is_the_one_the_dockerfile_describes(node: Node) -> None:
    archive = images.build_penguinmails_image()
    assert archive.cached  # the node imported this very archive
    config = images.read_archive_config(archive.path)["config"]
    stage = final_stage()
    assert config["Entrypoint"] == ["penguinmails-operator"]
    assert config["Entrypoint"] == json.loads(stage["ENTRYPOINT"][-1])
    assert config["User"] == stage["USER"][-1]


@pytest.fixture
def shared_pool(node: Node) -> Iterator[Node]:
    """The node without the dedicated pool's label and taint, whatever a test did to it."""
    node.set_dedicated(False)
    yield node
    node.set_dedicated(False)


def test_dedicated_senders_schedule_only_on_the_dedicated_pool(
    core: client.CoreV1Api, namespace: str, shared_pool: Node
) -> None:
    business = TIERS[Tier.BUSINESS]
    starter = TIERS[Tier.STARTER]
    assert business.node_selector, "business senders must ask for the dedicated pool"
    placement = {
        "nodeSelector": dict(business.node_selector),
        "tolerations": [dict(t) for t in business.tolerations],
    }
    command = ["python", "-c", "print('ran')"]
    core.create_namespaced_pod(namespace, pod_manifest("business", command, **placement))
    # The only node is in the shared pool: the scheduler says it cannot place the pod.
    assert wait_for(
        lambda: scheduling(core, namespace, "business"), what="a scheduling decision"
    ) == ("False", "Unschedulable")

    shared_pool.set_dedicated(True)
    wait_for(
        lambda: phase(core, namespace, "business") == "Succeeded",
        timeout=180,
        what="the business pod to run on the dedicated node",
    )
    assert core.read_namespaced_pod("business", namespace).spec.node_name == shared_pool.name

    # Tainted for the dedicated pool, the node refuses pods that do not tolerate it.
    placement = {"nodeSelector": dict(starter.node_selector)} if starter.node_selector else {}
    core.create_namespaced_pod(namespace, pod_manifest("starter", command, **placement))
    assert wait_for(
        lambda: scheduling(core, namespace, "starter"), what="a scheduling decision"
    ) == ("False", "Unschedulable")
    # It was the taint: without it, the same pod runs there.
    shared_pool.set_dedicated(False)
    wait_for(
        lambda: phase(core, namespace, "starter") == "Succeeded",
        timeout=180,
        what="the starter pod to run once the node left the dedicated pool",
    )


def test_an_image_that_is_not_local_is_never_fetched(
    core: client.CoreV1Api, namespace: str
) -> None:
    """Only the local images run: a pull fails at the node's dead proxy on loopback, so no
    registry on the internet is ever contacted from here."""
    manifest = pod_manifest("remote", ["true"])
    manifest["spec"]["containers"][0].update(
        image="registry.example/penguinmails/nothing:1", imagePullPolicy="Always"
    )
    core.create_namespaced_pod(namespace, manifest)

    def pull_failure() -> str:
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=remote,reason=Failed"
        ).items
        return " ".join(event.message for event in events)

    message = wait_for(pull_failure, timeout=120, what="the pull to fail")
    assert f"127.0.0.1:{NO_REGISTRY_PORT}" in message, message
    assert phase(core, namespace, "remote") == "Pending"


def test_pods_reach_the_api_server_in_cluster_and_local_services_exposed_to_them(
    core: client.CoreV1Api, namespace: str, node: Node
) -> None:
    """The `kubernetes` Service (kube-proxy to the API server's forwarder on the bridge), with
    the service-account token and CA a pod gets; and a loopback service `Node.expose`s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    host = node.expose(port)
    script = (
        "import json, os, socket, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "url = 'https://%s:%s/version' % (os.environ['KUBERNETES_SERVICE_HOST'],"
        " os.environ['KUBERNETES_SERVICE_PORT'])\n"
        "token = open(sa + '/token').read()\n"
        "request = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + token})\n"
        "context = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "print(json.load(urllib.request.urlopen(request, context=context))['gitVersion'])\n"
        f"socket.create_connection(({host!r}, {port}), timeout=10).sendall(b'from a pod')\n"
    )
    manifest = pod_manifest("in-cluster", ["python", "-c", script])
    manifest["spec"]["automountServiceAccountToken"] = True
    core.create_namespaced_pod(namespace, manifest)
    listener.settimeout(180)
    connection, _ = listener.accept()
    with connection, listener:
        assert connection.recv(100) == b"from a pod"
    wait_for(
        lambda: phase(core, namespace, "in-cluster") in ("Succeeded", "Failed"),
        timeout=60,
        what="the pod to finish",
    )
    logs = core.read_namespaced_pod_log("in-cluster", namespace)
    assert phase(core, namespace, "in-cluster") == "Succeeded", logs
    assert logs.split() == [KUBERNETES_VERSION]
