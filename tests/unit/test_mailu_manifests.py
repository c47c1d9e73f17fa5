"""In-cluster MailU manifests as data: ownership, pinned images, the port-25 Service."""

from __future__ import annotations

from typing import Any

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
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
