"""MailU installed over SSH on a new Hostwinds VPS (a real OpenSSH server on loopback).

Docker is not available here, so the start command that would run `docker compose up -d`
stands for it: it records that it ran, and can be made to wait so the operator can be killed
in the middle of the install.
"""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from kubernetes import client

from penguinmails.devstack.sshd import SshServer
from tests.integration.conftest import GROUP, VERSION, OperatorFactory, OperatorProcess, wait_for
from tests.integration.smtpserver_helpers import (
    PLURAL,
    condition,
    delete_and_wait_gone,
    ensure_namespace,
    get,
    hostwinds_body,
    put_secret,
    ssh_key,
    vps,
    wait_condition,
    workdir,
)
from tests.standins.hostwinds import HostwindsStandIn
from tests.standins.mailu import MailuAdminStandIn

__all__ = ["ssh_key", "vps", "workdir"]  # fixtures

pytestmark = pytest.mark.integration

NS = "smtp-mailu"
KEY = "hw-mailu-key"


@pytest.fixture(scope="module")
def mailu_api(core: client.CoreV1Api) -> Iterator[MailuAdminStandIn]:
    """MailU's admin API on the "VPS" (loopback), knowing the token the operator generated."""

    def token() -> str:
        secrets = [
            s for s in core.list_namespaced_secret(NS).items if s.metadata.name.endswith("-mailu")
        ]
        return base64.b64decode(secrets[-1].data["api-token"]).decode() if secrets else ""

    with MailuAdminStandIn(token) as server:
        yield server


@pytest.fixture(scope="module")
def standin() -> Iterator[HostwindsStandIn]:
    # Every VPS answers on loopback, where the OpenSSH server stands for it.
    with HostwindsStandIn({KEY}, provision_seconds=0.5, ip_for=lambda n: "127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def namespace(
    core: client.CoreV1Api, crds_installed: list[str], ssh_key: ed25519.Ed25519PrivateKey
) -> str:
    ensure_namespace(core, NS)
    put_secret(core, NS, "hostwinds", {"apiKey": KEY})
    private = ssh_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    put_secret(core, NS, "vps-ssh", {"id_ed25519": private.decode()})
    return NS


def mailu_dir(workdir: Path) -> Path:
    return workdir / "opt-mailu"


def start_operator(
    factory: OperatorFactory,
    standin: HostwindsStandIn,
    vps: SshServer,
    workdir: Path,
    mailu_api: MailuAdminStandIn,
) -> OperatorProcess:
    release = workdir / "release"
    # Stands for `docker compose up -d`: waits for the test's go-ahead, then records the run.
    command = (
        f"touch installing; while [ ! -e {release} ]; do sleep 0.1; done; "
        "grep -q '^API=true$' mailu.env && echo started >> started.log"
    )
    return factory(
        PM_HOSTWINDS_URL=standin.url,
        PM_HOSTWINDS_RPS="50",
        PM_HOSTWINDS_RETRY_BASE_SECONDS="0.1",
        PM_SMTP_POLL_SECONDS="0.5",
        PM_SMTP_PROBE_SECONDS="0",
        PM_MAILU_INSTALL="true",
        PM_VPS_SSH_PORT=str(vps.port),
        PM_VPS_SSH_USER=vps.user,
        PM_MAILU_DIR=str(mailu_dir(workdir)),
        PM_MAILU_START_COMMAND=command,
        PM_MAILU_RELAYNETS="10.42.0.0/16",
        PM_MAILU_API_PORT=str(mailu_api.port),
    )


def live_for(standin: HostwindsStandIn, obj: dict[str, object]) -> list[object]:
    uid = str(obj["metadata"]["uid"])  # type: ignore[index]
    return [i for i in standin.live() if i.srvrname == f"pm-{uid.replace('-', '')[:20]}"]


def test_mailu_installed_over_ssh_with_secrets_generated_once(
    operator_process: OperatorFactory,
    namespace: str,
    standin: HostwindsStandIn,
    vps: SshServer,
    workdir: Path,
    mailu_api: MailuAdminStandIn,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    (workdir / "release").touch()
    operator = start_operator(operator_process, standin, vps, workdir, mailu_api)
    try:
        body = hostwinds_body("mx-mailu", "mx1.mail.example.com")
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        obj = wait_condition(custom_objects, NS, "mx-mailu", "MailStackReady", "True")
        directory = mailu_dir(workdir)
        env = (directory / "mailu.env").read_text()
        assert stat.S_IMODE((directory / "mailu.env").stat().st_mode) == 0o600
        assert "HOSTNAMES=mx1.mail.example.com\n" in env and "DOMAIN=mail.example.com\n" in env
        assert "RELAYNETS=10.42.0.0/16\n" in env
        secret = core.read_namespaced_secret("mx-mailu-mailu", NS)
        token = base64.b64decode(secret.data["api-token"]).decode()
        assert f"API_TOKEN={token}\n" in env
        assert secret.metadata.owner_references[0].uid == obj["metadata"]["uid"]
        assert "ghcr.io/mailu/postfix:" in (directory / "docker-compose.yml").read_text()
        assert (directory / "started.log").read_text() == "started\n"
        # Configured through the admin API, over the SSH connection: domain and relay user.
        assert "mail.example.com" in mailu_api.domains
        relay = mailu_api.users["relay@mail.example.com"]
        assert relay["_password"] == base64.b64decode(secret.data["relay-password"]).decode()
        assert token not in str(obj) and token not in operator.log()
        assert len(live_for(standin, obj)) == 1
        # The host key seen on the first connection is pinned...
        secret = core.read_namespaced_secret("mx-mailu-mailu", NS)
        pinned = base64.b64decode(secret.data["ssh-host-key"]).decode()
        assert pinned.split()[:2] == vps.host_key_path.with_suffix(".pub").read_text().split()[:2]
        # ...and a VPS presenting another one is refused (a spec change makes it reinstall).
        other = (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        core.patch_namespaced_secret(
            "mx-mailu-mailu",
            NS,
            {"data": {"ssh-host-key": base64.b64encode(other).decode()}},
        )
        custom_objects.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "mx-mailu", {"spec": {"maxPerHour": 1000}}
        )
        obj = wait_condition(
            custom_objects, NS, "mx-mailu", "MailStackReady", "False", reason="SSHHostKeyChanged"
        )
        assert "ssh-host-key" in condition(obj, "MailStackReady")["message"]
        delete_and_wait_gone(custom_objects, NS, "mx-mailu")
        assert live_for(standin, obj) == []
    finally:
        operator.stop()
        (workdir / "release").unlink()


def test_missing_ssh_key_secret_names_the_field_and_orders_nothing(
    operator_process: OperatorFactory,
    namespace: str,
    standin: HostwindsStandIn,
    vps: SshServer,
    workdir: Path,
    mailu_api: MailuAdminStandIn,
    custom_objects: client.CustomObjectsApi,
) -> None:
    operator = start_operator(operator_process, standin, vps, workdir, mailu_api)
    try:
        body = hostwinds_body(
            "mx-nossh", "mx-nossh.example.com", sshKeySecretRef={"name": "nope", "key": "k"}
        )
        custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
        obj = wait_condition(
            custom_objects, NS, "mx-nossh", "Provisioned", "False", reason="SecretNotFound"
        )
        assert "spec.provider.hostwinds.sshKeySecretRef" in condition(obj, "Provisioned")["message"]
        assert live_for(standin, obj) == []
        delete_and_wait_gone(custom_objects, NS, "mx-nossh")
    finally:
        operator.stop()


def test_sigkill_during_mailu_install_then_restart_finishes_with_one_vps(
    operator_process: OperatorFactory,
    namespace: str,
    standin: HostwindsStandIn,
    vps: SshServer,
    workdir: Path,
    mailu_api: MailuAdminStandIn,
    custom_objects: client.CustomObjectsApi,
) -> None:
    directory = mailu_dir(workdir)
    (directory / "installing").unlink(missing_ok=True)
    (directory / "started.log").unlink(missing_ok=True)
    first = start_operator(operator_process, standin, vps, workdir, mailu_api)
    body = hostwinds_body("mx-killssh", "mx-killssh.example.com")
    custom_objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    wait_for(lambda: (directory / "installing").exists(), timeout=60, what="install running")
    obj = get(custom_objects, NS, "mx-killssh")
    assert obj is not None and condition(obj, "MailStackReady").get("status") != "True"
    first.kill()
    (workdir / "release").touch()
    second = start_operator(operator_process, standin, vps, workdir, mailu_api)
    try:
        obj = wait_condition(custom_objects, NS, "mx-killssh", "MailStackReady", "True")
        assert len(live_for(standin, obj)) == 1
        assert "started" in (directory / "started.log").read_text()
        delete_and_wait_gone(custom_objects, NS, "mx-killssh")
        assert live_for(standin, obj) == []
    finally:
        second.stop()
