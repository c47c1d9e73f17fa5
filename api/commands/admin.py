"""`keys` (the tenant's API keys: list, create, revoke) and `audit` (its audit log)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from penguinmails.api.client import Client

from .context import Parsers, api_command
from .output import emit, emit_list, field

__all__ = ["add_commands"]


def add_commands(commands: Parsers, common: argparse.ArgumentParser) -> None:
    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    api_command(keys, "ls", common, "list API keys (never the keys themselves)", _keys_ls)
    create = api_command(
        keys, "create", common, "create an API key; the key is printed this once", _keys_create
    )
    create.add_argument("name", help="what the key is for")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        dest="scopes",
        help="a right of the key, repeatable: domains|campaigns|smtp_servers:read|write",
    )
    create.add_argument("--expires-at", help="when it stops working (RFC 3339 with a zone)")
    revoke = api_command(keys, "revoke", common, "revoke an API key now", _keys_revoke)
    revoke.add_argument("id", help="the key's id (from keys ls)")

    audit = commands.add_parser("audit", help="the audit log").add_subparsers(
        dest="action", required=True
    )
    ls = api_command(audit, "ls", common, "audit log entries, newest first", _audit_ls)
    ls.add_argument("--actor", help="exactly this actor, e.g. user:<id> or api_key:<id>")
    ls.add_argument("--action", dest="audit_action", help="an action or a prefix: campaign.*")
    ls.add_argument("--target", help="exactly this target, e.g. campaign:q4")
    ls.add_argument("--since", help="entries at or after this time (RFC 3339 with a zone)")
    ls.add_argument("--until", help="entries before this time")


def _keys_ls(api: Client, args: argparse.Namespace) -> None:
    emit_list(
        args.output,
        api.list_keys(),
        ["ID", "NAME", "PREFIX", "SCOPES", "CREATED", "EXPIRES", "LAST USED", "REVOKED"],
        lambda k: [
            field(k, "id"),
            field(k, "name"),
            field(k, "prefix"),
            ",".join(k.get("scopes") or []),
            field(k, "createdAt"),
            field(k, "expiresAt", default="never"),
            field(k, "lastUsedAt", default="never"),
            field(k, "revokedAt"),
        ],
    )


def _print_new_key(created: dict[str, Any]) -> None:
    # The key alone on stdout (KEY=$(penguinmails keys create ...)); the words on stderr.
    print(
        f"API key {created['name']} ({created['id']}) created; "
        "it is shown this once, store it now:",
        file=sys.stderr,
    )
    print(created["key"])


def _keys_create(api: Client, args: argparse.Namespace) -> None:
    emit(args.output, api.create_key(args.name, args.scopes, args.expires_at), _print_new_key)


def _keys_revoke(api: Client, args: argparse.Namespace) -> None:
    api.revoke_key(args.id)
    emit(
        args.output,
        {"id": args.id, "revoked": True},
        lambda _: print(f"API key {args.id} revoked"),
    )


def _audit_ls(api: Client, args: argparse.Namespace) -> None:
    filters = {
        name: value
        for name, value in (
            ("actor", args.actor),
            ("action", args.audit_action),
            ("target", args.target),
            ("since", args.since),
            ("until", args.until),
        )
        if value
    }
    emit_list(
        args.output,
        api.audit_log(filters),
        ["AT", "ACTOR", "ACTION", "TARGET", "SOURCE", "REQUEST ID"],
        lambda e: [
            field(e, "at"),
            field(e, "actor"),
            field(e, "action"),
            field(e, "target"),
            field(e, "sourceAddress"),
            field(e, "requestId"),
        ],
    )
