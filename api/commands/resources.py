"""`domains`, `servers` and `campaigns`: the tenant's custom resources through the API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from penguinmails.api.client import Client

from .context import CliError, Parsers, api_command, load_manifest
from .output import age, conditions, emit, emit_list, field, table

__all__ = ["add_commands"]

Json = dict[str, Any]


def add_commands(commands: Parsers, common: argparse.ArgumentParser) -> None:
    _domains(commands, common)
    _servers(commands, common)
    _campaigns(commands, common)


def _group(commands: Parsers, name: str, help_: str) -> Parsers:
    return commands.add_parser(name, help=help_).add_subparsers(dest="action", required=True)


def _show_object(obj: Json, lines: list[tuple[str, str]]) -> None:
    base = [("name", field(obj, "name")), *lines]
    base += [
        ("created", field(obj, "createdAt")),
        ("resource version", field(obj, "resourceVersion")),
    ]
    width = max(len(k) for k, _ in base)
    for key, value in base:
        print(f"{key + ':':<{width + 1}} {value}")
    found = (obj.get("status") or {}).get("conditions") or []
    if found:
        print("conditions:")
        table(
            ["  TYPE", "STATUS", "REASON", "MESSAGE"],
            [
                [
                    "  " + field(c, "type"),
                    field(c, "status"),
                    field(c, "reason"),
                    field(c, "message"),
                ]
                for c in found
            ],
        )


# -- sending domains -----------------------------------------------------------------------


def _domains(commands: Parsers, common: argparse.ArgumentParser) -> None:
    group = _group(commands, "domains", "sending domains")
    api_command(group, "ls", common, "list sending domains", _domains_ls)
    api_command(
        group, "show", common, "a domain, its DNS records and verification", _domains_show
    ).add_argument("name")
    create = api_command(group, "create", common, "create a sending domain", _domains_create)
    create.add_argument("name", nargs="?", help="the object's name (not with -f)")
    create.add_argument(
        "--domain",
        help="the domain to send from; its records are published by hand (dnsProvider manual)",
    )
    create.add_argument(
        "-f", "--file", type=Path, help="a SendingDomain manifest (YAML, '-' for stdin)"
    )
    api_command(group, "delete", common, "delete a sending domain", _domains_delete).add_argument(
        "name"
    )


def _domain_row(d: Json) -> list[str]:
    found = conditions(d)
    return [
        field(d, "name"),
        field(d, "spec", "domain"),
        field(d, "spec", "dnsProvider", "type"),
        found.get("DNSVerified", ""),
        found.get("Ready", ""),
        age(d.get("createdAt")),
    ]


def _domains_ls(api: Client, args: argparse.Namespace) -> None:
    emit_list(
        args.output,
        api.list_domains(),
        ["NAME", "DOMAIN", "DNS", "VERIFIED", "READY", "AGE"],
        _domain_row,
    )


def _print_domain(d: Json) -> None:
    _show_object(
        d,
        [
            ("domain", field(d, "spec", "domain")),
            ("dns provider", field(d, "spec", "dnsProvider", "type")),
        ],
    )
    records = (d.get("status") or {}).get("records") or []
    if records:
        print("records to publish:")
        table(
            ["  TYPE", "NAME", "VALUE", "PUBLISHED", "VERIFIED"],
            [
                [
                    "  " + field(r, "type"),
                    field(r, "name"),
                    field(r, "value"),
                    field(r, "published"),
                    field(r, "verified"),
                ]
                for r in records
            ],
        )


def _domains_show(api: Client, args: argparse.Namespace) -> None:
    emit(args.output, api.get_domain(args.name), _print_domain)


def _domains_create(api: Client, args: argparse.Namespace) -> None:
    if args.file is not None:
        if args.name or args.domain:
            raise CliError(
                "-f: the name and the domain come from the file; give either -f or NAME --domain"
            )
        name, spec = load_manifest(args.file, "SendingDomain")
    elif args.name and args.domain:
        name, spec = args.name, {"domain": args.domain, "dnsProvider": {"type": "manual"}}
    else:
        raise CliError("give NAME --domain FQDN, or -f FILE.yaml")
    created = api.create_domain(name, spec)
    emit(args.output, created, lambda d: print(f"sending domain {d['name']} created"))


def _domains_delete(api: Client, args: argparse.Namespace) -> None:
    api.delete_domain(args.name)
    emit(
        args.output,
        {"name": args.name, "deleted": True},
        lambda _: print(f"sending domain {args.name} deleted"),
    )


# -- SMTP servers --------------------------------------------------------------------------


def _servers(commands: Parsers, common: argparse.ArgumentParser) -> None:
    group = _group(commands, "servers", "SMTP servers")
    api_command(group, "ls", common, "list SMTP servers", _servers_ls)
    api_command(group, "show", common, "an SMTP server and its state", _servers_show).add_argument(
        "name"
    )


def _provider(s: Json) -> str:
    given = (s.get("spec") or {}).get("provider") or {}
    return field(s, "status", "provider") or ",".join(sorted(given))


def _servers_ls(api: Client, args: argparse.Namespace) -> None:
    emit_list(
        args.output,
        api.list_servers(),
        ["NAME", "HOSTNAME", "PROVIDER", "PHASE", "READY", "AGE"],
        lambda s: [
            field(s, "name"),
            field(s, "spec", "hostname"),
            _provider(s),
            field(s, "status", "phase"),
            conditions(s).get("Ready", ""),
            age(s.get("createdAt")),
        ],
    )


def _servers_show(api: Client, args: argparse.Namespace) -> None:
    emit(
        args.output,
        api.get_server(args.name),
        lambda s: _show_object(
            s,
            [
                ("hostname", field(s, "spec", "hostname")),
                ("provider", _provider(s)),
                ("phase", field(s, "status", "phase")),
            ],
        ),
    )


# -- campaigns -----------------------------------------------------------------------------


def _campaigns(commands: Parsers, common: argparse.ArgumentParser) -> None:
    group = _group(commands, "campaigns", "campaigns")
    api_command(group, "ls", common, "list campaigns", _campaigns_ls)
    api_command(group, "show", common, "a campaign and its progress", _campaigns_show).add_argument(
        "name"
    )
    create = api_command(
        group, "create", common, "create a campaign from a manifest", _campaigns_create
    )
    create.add_argument(
        "-f", "--file", type=Path, required=True, help="a Campaign manifest (YAML, '-' for stdin)"
    )
    for verb, help_ in (
        ("pause", "pause a campaign"),
        ("resume", "resume a paused campaign"),
        ("delete", "delete a campaign"),
    ):
        api_command(group, verb, common, help_, _campaigns_change).add_argument("name")


def _sent(c: Json) -> str:
    counts = (c.get("status") or {}).get("counts")
    return (
        f"{field(counts, 'sent', default='0')}/{field(counts, 'total', default='0')}"
        if counts
        else ""
    )


def _campaigns_ls(api: Client, args: argparse.Namespace) -> None:
    emit_list(
        args.output,
        api.list_campaigns(),
        ["NAME", "DOMAIN", "PHASE", "PAUSED", "SENT", "PROGRESS", "AGE"],
        lambda c: [
            field(c, "name"),
            field(c, "spec", "sendingDomainRef", "name"),
            field(c, "status", "phase"),
            field(c, "spec", "paused", default="no"),
            _sent(c),
            (field(c, "status", "progress") + "%") if field(c, "status", "progress") else "",
            age(c.get("createdAt")),
        ],
    )


def _print_campaign(c: Json) -> None:
    lines = [
        ("subject", field(c, "spec", "subject")),
        ("from", field(c, "spec", "from", "address")),
        ("sending domain", field(c, "spec", "sendingDomainRef", "name")),
        ("lists", ", ".join((c.get("spec") or {}).get("audience", {}).get("lists") or [])),
        ("paused", field(c, "spec", "paused", default="no")),
        ("phase", field(c, "status", "phase")),
        ("sent", _sent(c)),
        ("progress", field(c, "status", "progress")),
        ("bounce rate", field(c, "status", "bounceRate")),
        ("complaint rate", field(c, "status", "complaintRate")),
    ]
    _show_object(c, [(k, v) for k, v in lines if v])


def _campaigns_show(api: Client, args: argparse.Namespace) -> None:
    emit(args.output, api.get_campaign(args.name), _print_campaign)


def _campaigns_create(api: Client, args: argparse.Namespace) -> None:
    name, spec = load_manifest(args.file, "Campaign")
    emit(
        args.output,
        api.create_campaign(name, spec),
        lambda c: print(f"campaign {c['name']} created"),
    )


def _campaigns_change(api: Client, args: argparse.Namespace) -> None:
    if args.action == "delete":
        api.delete_campaign(args.name)
        emit(
            args.output,
            {"name": args.name, "deleted": True},
            lambda _: print(f"campaign {args.name} deleted"),
        )
        return
    changed = (
        api.pause_campaign(args.name) if args.action == "pause" else api.resume_campaign(args.name)
    )
    emit(args.output, changed, lambda c: print(f"campaign {c['name']} {args.action}d"))
