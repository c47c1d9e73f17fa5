"""In-cluster MailU manifests as data: ownership, pinned images, the port-25 Service, Pod
Security, resources and volumes."""

from __future__ import annotations

from typing import Any

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.operator.mailu.manifests import Owner, manifests
from penguinmails.operator.mailu.render import MailuSecrets

OWNER = Owner("mx", "tenant-acme", "uid-1")
SECRETS = MailuSecrets("k" * 32, "t" * 40, "p" * 24)


def render(**mailu: Any) -> dict[str, dict[str, Any]]:
    spec = SmtpServerSpec.model_validate(
        {"hostname": "mx.mail.example.com", "provider": {"mailuInCluster": mailu}}
    )
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests(OWNER, spec, SECRETS)}


def test_everything_is_owned_by_the_smtpserver_in_its_namespace() -> None:
    for manifest in render().values():
        (owner,) = manifest["metadata"]["ownerReferences"]
        assert owner["uid"] == "uid-1" and owner["controller"] is True
        assert manifest["metadata"]["namespace"] == "tenant-acme"


def test_no_secret_in_the_configmap() -> None:
    data = render()["ConfigMap/mx-mailu-env"]["data"]
    assert SECRETS.secret_key not in str(data) and SECRETS.api_token not in str(data)
    assert data["HOST_ADMIN"] == "mx-mailu-admin"


def test_load_balancer_keeps_client_ip_and_cluster_ip_has_no_policy() -> None:
    public = render()["Service/mx-mailu-public"]["spec"]
    assert public["type"] == "LoadBalancer" and public["externalTrafficPolicy"] == "Local"
    internal = render(serviceType="ClusterIP")["Service/mx-mailu-public"]["spec"]
    assert "externalTrafficPolicy" not in internal


def test_images_follow_the_requested_version_and_dovecot_stays_single() -> None:
    objects = render(version="2024.06.5", replicas=3)
    imap = objects["Deployment/mx-mailu-imap"]["spec"]
    assert imap["replicas"] == 1
    assert imap["template"]["spec"]["containers"][0]["image"] == "ghcr.io/mailu/dovecot:2024.06.5"
    assert objects["Deployment/mx-mailu-front"]["spec"]["replicas"] == 3
    assert objects["Deployment/mx-mailu-smtp"]["spec"]["replicas"] == 1  # one queue, one writer


def deployments(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k.split("/", 1)[1]: v for k, v in objects.items() if k.startswith("Deployment/")}


def pod_violations_of_restricted(pod: dict[str, Any]) -> list[str]:
    """The checks of Pod Security `restricted` that concern these pods (the API server's own
    admission is exercised in tests/integration/test_mailu_tenant_namespace.py)."""
    found = []
    pod_security = pod.get("securityContext") or {}
    for container in pod["containers"]:
        security = {**pod_security, **(container.get("securityContext") or {})}
        if security.get("runAsNonRoot") is not True:
            found.append(f"{container['name']}: runAsNonRoot")
        if (security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            found.append(f"{container['name']}: seccomp")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{container['name']}: allowPrivilegeEscalation")
        capabilities = security.get("capabilities") or {}
        if capabilities.get("drop") != ["ALL"] or set(capabilities.get("add") or []) - {
            "NET_BIND_SERVICE"
        }:
            found.append(f"{container['name']}: capabilities")
    return found


# Pod Security `baseline`: capabilities a container may add (the default container set).
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}


def test_redis_is_restricted_and_mailus_images_are_least_privilege_baseline() -> None:
    for name, deployment in deployments(render()).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert "privileged" not in security and "hostNetwork" not in pod
        if name == "mx-mailu-redis":
            assert pod_violations_of_restricted(pod) == []
            assert pod["securityContext"]["runAsUser"] != 0
        else:
            # MailU's images start as root (manifests.py): restricted is out of reach...
            assert pod_violations_of_restricted(pod)
            # ...and they add only what baseline allows.
            assert set(security["capabilities"]["add"]) <= BASELINE_CAPABILITIES


def test_every_container_has_cpu_and_memory_requests_and_limits() -> None:
    for deployment in deployments(render()).values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert set(resources[kind]) == {"cpu", "memory"}, container["name"]


def test_one_volume_per_stateful_component_and_no_rwo_volume_shared() -> None:
    objects = render(replicas=3, storageSize="20Gi", storageClassName="fast")
    claims = {k.split("/", 1)[1]: v for k, v in objects.items() if k.startswith("Persistent")}
    mounted: dict[str, list[tuple[str, int]]] = {}
    for name, deployment in deployments(objects).items():
        spec = deployment["spec"]
        for volume in spec["template"]["spec"]["volumes"]:
            claim = volume["persistentVolumeClaim"]["claimName"]
            mounted.setdefault(claim, []).append((name, spec["replicas"]))
        assert spec["strategy"] == {"type": "Recreate"}
    assert set(mounted) == set(claims)
    for claim, users in mounted.items():
        (mode,) = claims[claim]["spec"]["accessModes"]
        pods = sum(replicas for _, replicas in users)
        if mode == "ReadWriteOnce":
            assert len(users) == 1 and pods == 1, claim
        else:
            assert mode == "ReadWriteMany" and pods == 3 and claim == "mx-mailu-front-shared"
        assert claims[claim]["spec"]["storageClassName"] == "fast"
    sizes = {name: c["spec"]["resources"]["requests"]["storage"] for name, c in claims.items()}
    assert sizes["mx-mailu-imap"] == sizes["mx-mailu-smtp"] == "20Gi"
    assert sizes["mx-mailu-admin"] == "1Gi"


def test_a_single_front_keeps_its_certificates_on_a_read_write_once_volume() -> None:
    claim = render(replicas=1)["PersistentVolumeClaim/mx-mailu-front"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_pods_follow_the_tiers_node_pool() -> None:
    spec = SmtpServerSpec.model_validate(
        {"hostname": "mx.mail.example.com", "provider": {"mailuInCluster": {}}}
    )
    dedicated = manifests(OWNER, spec, SECRETS, TIERS[Tier.BUSINESS])
    for manifest in dedicated:
        if manifest["kind"] == "Deployment":
            pod = manifest["spec"]["template"]["spec"]
            assert pod["nodeSelector"] == dict(TIERS[Tier.BUSINESS].node_selector)
            assert pod["tolerations"] == [dict(t) for t in TIERS[Tier.BUSINESS].tolerations]
    for manifest in manifests(OWNER, spec, SECRETS, TIERS[Tier.STARTER]):
        if manifest["kind"] == "Deployment":
            assert "nodeSelector" not in manifest["spec"]["template"]["spec"]
