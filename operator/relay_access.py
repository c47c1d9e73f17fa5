"""How a tenant's sender reaches the SmtpServers of its campaigns: by name, with credentials.

The sender reads Secrets only in its own tenant namespace (its Role), so whatever it needs to
authenticate to a relay and to verify the relay's certificate must be there:

- **Provisioned servers** (Hostwinds VPS with MailU, MailU in the cluster) are reached by
  `spec.hostname` on 587 with STARTTLS verified against that name (a certificate names the
  host, never the IP in `status.ipAddress`; the name is also what SNI must carry). A Hostwinds
  server's relay user (`relay@<domain>`, created by operator/mailu/install.py) has its password
  in the operator's `<server>-mailu` Secret next to MailU's admin token: only the username and
  password are copied into the tenant namespace, as `<server>-relay`.
- **External relays** in the tenant's own namespace keep their `credentialsSecretRef` and
  `caSecretRef` as they are (the tenant created them there).
- **Shared-pool servers** live in the platform namespace: their credentials and CA are copied
  into each tenant namespace they serve, as `pool-<server>-relay` (keys username, password,
  ca.crt), never the platform's other Secrets.

`ensure_relay_secrets()` writes the copies (only when their content changed) before the plan is
written; `plan_relay()` is the pure part that names them in the plan.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
from penguinmails.common.db.blocks import pool_server_name
from penguinmails.common.db.ledger import Relay
from penguinmails.operator.context import Context
from penguinmails.operator.mailu.install import relay_user
from penguinmails.operator.mailu.install import secret_name as mailu_secret_name
from penguinmails.operator.secret_access import apply_secret

__all__ = ["CA_KEY", "ensure_relay_secrets", "plan_relay", "relay_secret_name"]

CA_KEY = "ca.crt"
SUBMISSION_PORT = 587


def _meta(server: Mapping[str, Any]) -> tuple[str, str]:
    meta = server.get("metadata") or {}
    return str(meta["name"]), str(meta.get("namespace") or "")


def relay_secret_name(server: Mapping[str, Any], tenant_namespace: str) -> str:
    """The Secret in the tenant namespace holding what the sender needs for this server."""
    name, namespace = _meta(server)
    return f"{name}-relay" if namespace == tenant_namespace else f"pool-{name}-relay"


def plan_relay(
    server: Mapping[str, Any], tenant_namespace: str, *, daily_limit: int | None
) -> Relay:
    """The plan's relay for one SmtpServer, as seen from `tenant_namespace` (a shared-pool
    server's name qualified by its namespace: `pool_server_name`)."""
    spec = server.get("spec") or {}
    name, namespace = _meta(server)
    local = namespace == tenant_namespace
    relay_name = name if local else pool_server_name(namespace, name)
    provider = spec.get("provider") or {}
    relay = provider.get("relay")
    copy = relay_secret_name(server, tenant_namespace)
    if relay:
        credentials = (relay.get("credentialsSecretRef") or {}).get("name")
        ca = relay.get("caSecretRef") or {}
        return Relay(
            name=relay_name,
            host=relay["host"],
            port=int(relay.get("port", SUBMISSION_PORT)),
            tls=relay.get("tls", "starttls"),
            credentials_secret=(credentials if local else copy) if credentials else None,
            ca_secret=(ca.get("name") if local else copy) if ca else None,
            ca_key=(ca.get("key") if local else CA_KEY) if ca else None,
            daily_limit=daily_limit,
            max_per_hour=spec.get("maxPerHour"),
            weight=int(spec.get("weight", 100)),
        )
    return Relay(
        name=relay_name,
        host=str(spec["hostname"]),
        port=SUBMISSION_PORT,
        tls="starttls",
        credentials_secret=copy if provider.get("hostwinds") else None,
        daily_limit=daily_limit,
        max_per_hour=spec.get("maxPerHour"),
        weight=int(spec.get("weight", 100)),
    )


async def _data(ctx: Context, name: str | None, namespace: str) -> dict[str, str]:
    if not name:
        return {}
    secret = await ctx.kube.get("v1", "Secret", name, namespace)
    return {
        key: base64.b64decode(value).decode()
        for key, value in ((secret or {}).get("data") or {}).items()
    }


async def _wanted(ctx: Context, server: Mapping[str, Any], tenant_namespace: str) -> dict[str, str]:
    """What the tenant's copy must hold; empty when no copy is needed (or nothing to copy yet:
    the sender then reports the missing Secret and the campaign waits)."""
    spec = server.get("spec") or {}
    name, namespace = _meta(server)
    provider = spec.get("provider") or {}
    relay = provider.get("relay")
    if relay:
        if namespace == tenant_namespace:
            return {}
        wanted: dict[str, str] = {}
        credentials = await _data(
            ctx, (relay.get("credentialsSecretRef") or {}).get("name"), namespace
        )
        if "username" in credentials and "password" in credentials:
            wanted |= {"username": credentials["username"], "password": credentials["password"]}
        ca = relay.get("caSecretRef") or {}
        if ca:
            value = (await _data(ctx, ca.get("name"), namespace)).get(str(ca.get("key")))
            if value:
                wanted[CA_KEY] = value
        return wanted
    if not provider.get("hostwinds"):
        return {}
    mailu = await _data(ctx, mailu_secret_name(name), namespace)
    password = mailu.get("relay-password")
    if not password:
        return {}
    user = relay_user(SmtpServerSpec.model_validate(dict(spec)))
    return {"username": user, "password": password}


async def ensure_relay_secrets(
    ctx: Context, servers: Sequence[Mapping[str, Any]], tenant_namespace: str
) -> None:
    """Copy into the tenant namespace what its sender needs to use `servers` (when changed)."""
    for server in servers:
        wanted = await _wanted(ctx, server, tenant_namespace)
        if not wanted:
            continue
        target = relay_secret_name(server, tenant_namespace)
        if await _data(ctx, target, tenant_namespace) == wanted:
            continue
        name, namespace = _meta(server)
        metadata: dict[str, Any] = {
            "name": target,
            "namespace": tenant_namespace,
            "labels": {"app.kubernetes.io/managed-by": "penguinmails"},
            "annotations": {"penguinmails.io/relay-of": f"{namespace}/{name}"},
        }
        uid = (server.get("metadata") or {}).get("uid")
        if namespace == tenant_namespace and uid:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "penguinmails.io/v1alpha1",
                    "kind": "SmtpServer",
                    "name": name,
                    "uid": uid,
                }
            ]
        await apply_secret(
            ctx.kube,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata,
                "type": "Opaque",
                "stringData": wanted,
            },
        )
