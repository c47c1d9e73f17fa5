"""On the real node (kubelet + containerd + runc): the security context the operator gives MailU's
root-started images lets a process do what their start scripts do (chown a volume, drop to
another user with setgroups/setgid/setuid, bind port 25), and `restricted` would not.

MailU's images cannot be pulled here (no registry), so the local penguinmails image stands in,
run as root as MailU's images are (their Dockerfiles set no USER), under the very pod and
container security contexts rendered for MailU's front.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
from penguinmails.api.v1alpha1.tiers import Tier
from penguinmails.devstack import images
from penguinmails.devstack.node import Node
from penguinmails.operator.mailu.manifests import Owner, manifests
from penguinmails.operator.mailu.render import MailuSecrets
from tests.integration.conftest import wait_for
from tests.integration.test_mailu_tenant_namespace import tenant_namespace

pytestmark = pytest.mark.integration

# What socrate's drop_privs_to and the start scripts do, one line each, reporting what failed.
SCRIPT = """
import os, socket
def step(name, action):
    try:
        action()
        print(name, "ok")
    except OSError as error:
        print(name, type(error).__name__)
os.makedirs("/tmp/queue", exist_ok=True)
step("chown", lambda: os.chown("/tmp/queue", 100, 101))
step("bind25", lambda: socket.socket().bind(("0.0.0.0", 25)))
pid = os.fork()
if pid == 0:
    step("setgroups", lambda: os.setgroups([]))
    step("setgid", lambda: os.setgid(101))
    step("setuid", lambda: os.setuid(100))
    print("uid", os.getuid())
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.fixture
def business_namespace(core: client.CoreV1Api, node: Node) -> Iterator[str]:
    name = tenant_namespace(core, Tier.BUSINESS)
    yield name
    core.delete_namespace(name)


def front_security() -> tuple[dict[str, Any], dict[str, Any]]:
    spec = SmtpServerSpec.model_validate(
        {"hostname": "mx.node.example.com", "provider": {"mailuInCluster": {}}}
    )
    (front,) = (
        m
        for m in manifests(Owner("mx", "ns", "uid"), spec, MailuSecrets("k", "t"))
        if m["metadata"]["name"] == "mx-mailu-front" and m["kind"] == "Deployment"
    )
    pod = front["spec"]["template"]["spec"]
    return dict(pod["securityContext"]), dict(pod["containers"][0]["securityContext"])


def run(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    pod: dict[str, Any],
    container: dict[str, Any],
) -> list[str]:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": pod,
            "containers": [
                {
                    "name": "main",
                    "image": images.IMAGE_NAME,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", SCRIPT],
                    "securityContext": container,
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "250m", "memory": "128Mi"},
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, manifest)
    wait_for(
        lambda: core.read_namespaced_pod(name, namespace).status.phase in ("Succeeded", "Failed"),
        timeout=180,
        what=f"pod {name} to finish",
    )
    assert core.read_namespaced_pod(name, namespace).status.phase == "Succeeded"
    return str(core.read_namespaced_pod_log(name, namespace)).splitlines()


def test_mailus_security_context_allows_what_its_start_scripts_do_and_restricted_would_not(
    core: client.CoreV1Api, business_namespace: str
) -> None:
    pod, container = front_security()
    # MailU's images run as root: their Dockerfiles set no USER (the local image's is 10001).
    as_mailu = run(core, business_namespace, "as-mailu", {**pod, "runAsUser": 0}, container)
    assert as_mailu == [
        "chown ok",
        "bind25 ok",
        "setgroups ok",
        "setgid ok",
        "setuid ok",
        "uid 100",
    ]
    restricted = {**pod, "runAsNonRoot": True, "runAsUser": 10001}
    without = {**container, "capabilities": {"drop": ["ALL"]}}
    as_restricted = run(core, business_namespace, "as-restricted", restricted, without)
    assert as_restricted == [
        "chown PermissionError",
        "bind25 PermissionError",
        "setgroups PermissionError",
        "setgid PermissionError",
        "setuid PermissionError",
        "uid 10001",
    ]
