"""MailU on a fresh VPS: secrets generated once into a Secret, files copied and started over SSH.

Every step is idempotent: the Secret is created only when missing (so SECRET_KEY and the API
token never change under a running MailU), the files are rewritten with the same content, and
``docker compose up -d`` leaves running containers alone. A crash mid-install simply repeats it.

The VPS is new and its host key unknown until its first answer; the key is accepted on that
first connection (the VPS was created by us moments before, through an authenticated API).
"""

from __future__ import annotations

import base64
import secrets as random
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import asyncssh

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
from penguinmails.common.settings import SmtpServerSettings
from penguinmails.operator.context import Context
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.kube import controller_reference
from penguinmails.operator.mailu.admin_api import MailuAdmin, MailuAdminError
from penguinmails.operator.mailu.render import (
    MailuSecrets,
    domain_of,
    env_values,
    render_compose,
    render_env,
)
from penguinmails.operator.secret_access import apply_secret

SSH_FIELD = "spec.provider.hostwinds.sshKeySecretRef"
T = TypeVar("T")


def secret_name(server: str) -> str:
    return f"{server}-mailu"


def _secret(namespace: str, server: str, uid: str, values: dict[str, str]) -> dict[str, Any]:
    # Always every key: with server-side apply, a key left out would be removed.
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(server),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "penguinmails"},
            "ownerReferences": [controller_reference("SmtpServer", server, uid)],
        },
        "type": "Opaque",
        "stringData": values,
    }


def _values(secrets: MailuSecrets) -> dict[str, str]:
    values = {
        "secret-key": secrets.secret_key,
        "api-token": secrets.api_token,
        "relay-password": secrets.relay_password,
    }
    if secrets.ssh_host_key:
        values["ssh-host-key"] = secrets.ssh_host_key
    return values


async def ensure_mailu_secrets(ctx: Context, namespace: str, server: str, uid: str) -> MailuSecrets:
    """The MailU secrets of a server, generated on first use and owned by the SmtpServer."""
    existing = await ctx.kube.get("v1", "Secret", secret_name(server), namespace)
    if existing is None:
        generated = MailuSecrets(
            secret_key=random.token_hex(16),
            api_token=random.token_urlsafe(32),
            relay_password=random.token_urlsafe(24),
        )
        # Only in a tenant's namespace under the chart (operator/secret_access.py).
        existing = await apply_secret(ctx.kube, _secret(namespace, server, uid, _values(generated)))
    data = (existing or {}).get("data") or {}

    def text(key: str) -> str:
        return base64.b64decode(data.get(key, "")).decode()

    return MailuSecrets(
        secret_key=text("secret-key"),
        api_token=text("api-token"),
        relay_password=text("relay-password"),
        ssh_host_key=text("ssh-host-key"),
    )


async def pin_host_key(
    ctx: Context, namespace: str, server: str, uid: str, secrets: MailuSecrets, host_key: str
) -> None:
    """Remember the VPS's SSH host key, seen on the first connection; later ones must match."""
    pinned = replace(secrets, ssh_host_key=host_key)
    await apply_secret(ctx.kube, _secret(namespace, server, uid, _values(pinned)))


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    username: str
    private_key: str

    def __repr__(self) -> str:
        return f"SshTarget({self.username}@{self.host}:{self.port})"


Configure = Callable[[str], Awaitable[None]]


@asynccontextmanager
async def ssh_connection(
    target: SshTarget, host_key: str | None
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An SSH connection to the VPS, presenting ``host_key`` (None: any, the first time);
    its failures become conditions naming what to fix."""
    try:
        key = asyncssh.import_private_key(target.private_key)
    except (asyncssh.KeyImportError, ValueError) as error:
        raise ReconcileError(
            "InvalidSSHKey", f"{SSH_FIELD}: not a usable private key ({error})", transient=False
        ) from None
    try:
        async with asyncssh.connect(
            target.host,
            port=target.port,
            username=target.username,
            client_keys=[key],
            known_hosts=None if not host_key else ([asyncssh.import_public_key(host_key)], [], []),
            agent_path=None,
            connect_timeout=20,
        ) as connection:
            yield connection
    except asyncssh.HostKeyNotVerifiable:
        raise ReconcileError(
            "SSHHostKeyChanged",
            f"{target!r} presented a host key other than the one pinned in the Secret's "
            "ssh-host-key: if the VPS was rebuilt on purpose, delete that key from the Secret",
            transient=True,
        ) from None
    except asyncssh.PermissionDenied:
        raise ReconcileError(
            "SSHAuthFailed",
            f"{target!r} refused the key in {SSH_FIELD}: install its public key on the VPS",
            transient=True,
        ) from None
    except (OSError, asyncssh.Error) as error:
        raise ReconcileError(
            "SSHUnreachable",
            f"{target!r}: {type(error).__name__}: {error}; retrying",
            transient=True,
        ) from None


@asynccontextmanager
async def admin_tunnel(
    connection: asyncssh.SSHClientConnection, api_port: int
) -> AsyncIterator[str]:
    """MailU's admin API URL, through a local port forwarded over the SSH connection to
    ``api_port`` on the VPS (so the admin token never travels in clear)."""
    listener = await connection.forward_local_port("127.0.0.1", 0, "127.0.0.1", api_port)
    try:
        yield f"http://127.0.0.1:{listener.get_port()}/api/v1"
    finally:
        listener.close()


async def copy_and_start(
    target: SshTarget,
    directory: str,
    files: dict[str, tuple[str, int]],
    command: str,
    *,
    api_port: int | None = None,
    configure: Configure | None = None,
    host_key: str | None = None,
    pin: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """Write ``files`` (name → (content, mode)) into ``directory``, run ``command`` there, then
    call ``configure`` with a local URL forwarded through the same SSH connection to
    ``api_port`` on the VPS (so the admin token never travels in clear).

    ``host_key`` (OpenSSH public key line) is the key the VPS must present; None accepts any,
    as on the first connection to a VPS created moments before; ``pin`` is then called with the
    key presented, before anything is sent, so every later connection must meet the same key.
    """
    async with ssh_connection(target, host_key) as connection:
        presented = connection.get_server_host_key()
        if not host_key and pin is not None and presented is not None:
            await pin(presented.export_public_key("openssh").decode().strip())
        async with connection.start_sftp_client() as sftp:
            await sftp.makedirs(directory, exist_ok=True)
            for name, (content, mode) in files.items():
                path = f"{directory}/{name}"
                async with sftp.open(path, "w", asyncssh.SFTPAttrs(permissions=mode)) as out:
                    await out.write(content)
                await sftp.chmod(path, mode)
        result = await connection.run(
            f"cd {shlex.quote(directory)} && {command}", check=False, timeout=900
        )
        if result.exit_status == 0 and configure is not None and api_port is not None:
            async with admin_tunnel(connection, api_port) as api_url:
                await configure(api_url)
    if result.exit_status != 0:
        tail = str(result.stderr or "").strip().splitlines()[-3:]
        raise ReconcileError(
            "MailUInstallFailed",
            f"starting MailU on {target.host} exited with {result.exit_status}: "
            + " | ".join(tail),
            transient=True,
        )


async def install_on_vps(
    ctx: Context,
    settings: SmtpServerSettings,
    *,
    namespace: str,
    name: str,
    uid: str,
    spec: SmtpServerSpec,
    host: str,
    private_key: str,
) -> None:
    secrets = await ensure_mailu_secrets(ctx, namespace, name, uid)
    values = env_values(spec, secrets, relaynets=settings.mailu_relaynets)
    files = {
        "mailu.env": (render_env(values), 0o600),  # holds SECRET_KEY and API_TOKEN
        "docker-compose.yml": (render_compose(), 0o644),
    }
    target = SshTarget(host, settings.ssh_port, settings.ssh_user, private_key)
    domain = domain_of(spec.hostname)

    async def configure(api_url: str) -> None:
        admin = MailuAdmin(api_url, secrets.api_token)
        try:
            await admin.ensure_domain(domain)
            await admin.ensure_user(relay_user(spec), secrets.relay_password)
        except MailuAdminError as error:
            # MailU's admin needs a while after `up -d`: the next pass tries again.
            raise ReconcileError("MailUConfiguring", f"{error}; retrying", transient=True) from None
        finally:
            await admin.aclose()

    async def pin(host_key: str) -> None:
        await pin_host_key(ctx, namespace, name, uid, secrets, host_key)

    await copy_and_start(
        target,
        settings.mailu_dir,
        files,
        settings.mailu_start_command,
        api_port=settings.mailu_api_port,
        configure=configure,
        host_key=secrets.ssh_host_key or None,
        pin=pin,
    )


def relay_user(spec: SmtpServerSpec) -> str:
    """The MailU user the sender pods authenticate as (its password is in <name>-mailu)."""
    return f"relay@{domain_of(spec.hostname)}"


async def use_vps_admin(
    ctx: Context,
    settings: SmtpServerSettings,
    *,
    namespace: str,
    name: str,
    uid: str,
    host: str,
    private_key: str,
    use: Callable[[MailuAdmin], Awaitable[T]],
) -> T:
    """Run ``use`` with the admin API of the MailU installed on the VPS, over SSH (the host key
    pinned at install must be the one presented)."""
    secrets = await ensure_mailu_secrets(ctx, namespace, name, uid)
    target = SshTarget(host, settings.ssh_port, settings.ssh_user, private_key)
    async with (
        ssh_connection(target, secrets.ssh_host_key or None) as connection,
        admin_tunnel(connection, settings.mailu_api_port) as api_url,
    ):
        admin = MailuAdmin(api_url, secrets.api_token)
        try:
            return await use(admin)
        finally:
            await admin.aclose()
