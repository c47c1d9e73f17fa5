"""What every API command shares: the options (`--api-url`, `--tenant`, `-o`), where the API
and the tenant come from, and the stored sign-in turned into a client.

The API's address: `--api-url`, else `PM_API_URL`, else the one signed in to, else the local
default. The tenant: `--tenant`, else `PM_TENANT`, else the one chosen at login.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from penguinmails.api.client import Client, Credentials, Session, credentials_path
from penguinmails.api.client import credentials as stored
from penguinmails.api.v1alpha1 import GROUP_VERSION

__all__ = [
    "DEFAULT_API_URL",
    "CliError",
    "Parsers",
    "api_command",
    "api_url",
    "client",
    "common_options",
    "load_manifest",
    "signed_in",
]

DEFAULT_API_URL = "http://127.0.0.1:8000"

Parsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""The subcommands of a command (a string: argparse's class is not subscriptable at run time)."""


class CliError(Exception):
    """A mistake the user can fix, said in one line; the command exits with status 1."""


def common_options() -> argparse.ArgumentParser:
    """The options of every API command, accepted after the command's own words."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url", help=f"the API's address (default: PM_API_URL, the login's, {DEFAULT_API_URL})"
    )
    common.add_argument("--tenant", help="the tenant to act on (default: PM_TENANT, the login's)")
    common.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table or json"
    )
    return common


def api_url(args: argparse.Namespace, saved: Credentials | None) -> str:
    url: str = (
        args.api_url
        or os.environ.get("PM_API_URL")
        or (saved.api_url if saved else None)
        or DEFAULT_API_URL
    )
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--api-url {url!r}: give an http:// or https:// address")
    return url.rstrip("/")


def signed_in(args: argparse.Namespace) -> tuple[Session, Credentials]:
    path = credentials_path()
    try:
        saved = stored.load(path)
    except ValueError as error:
        raise CliError(str(error)) from error
    if saved is None:
        raise CliError("not signed in: run `penguinmails login` first")
    url = api_url(args, saved)
    if url != saved.api_url:
        saved = replace(saved, api_url=url)
    return Session(saved, path), saved


def client(args: argparse.Namespace) -> Client:
    session, saved = signed_in(args)
    tenant = args.tenant or os.environ.get("PM_TENANT") or saved.tenant
    if not tenant:
        session.close()
        raise CliError(
            "no tenant chosen: pass --tenant NAME (or set PM_TENANT, or log in with --tenant)"
        )
    return Client(session, tenant)


def api_command(
    group: Parsers,
    name: str,
    common: argparse.ArgumentParser,
    help_: str,
    run: Callable[[Client, argparse.Namespace], int | None],
) -> argparse.ArgumentParser:
    """A subcommand `name` of `group` that runs `run` with a client of the stored sign-in;
    its exit status is what `run` returns (None: 0)."""
    parser = group.add_parser(name, parents=[common], help=help_)

    def invoke(args: argparse.Namespace) -> int:
        api = client(args)
        with api.session:
            status = run(api, args)
        return status or 0

    parser.set_defaults(run=invoke)
    return parser


def load_manifest(path: Path, kind: str) -> tuple[str, dict[str, Any]]:
    """(name, spec) of a `kind` manifest, as `kubectl apply -f` takes it; `-` is stdin.

    metadata.namespace, if any, is ignored: the tenant comes from --tenant or the login."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise CliError(f"{path}: {error}") from error
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise CliError(f"{path}: expected one {kind} manifest (a YAML mapping)")
    manifest: dict[str, Any] = documents[0]
    if manifest.get("kind", kind) != kind:
        raise CliError(f"{path}: kind is {manifest['kind']!r}; this command takes a {kind}")
    if manifest.get("apiVersion", GROUP_VERSION) != GROUP_VERSION:
        raise CliError(f"{path}: apiVersion must be {GROUP_VERSION}")
    name = (manifest.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise CliError(f"{path}: metadata.name is missing: name the {kind}")
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise CliError(f"{path}: spec is missing or not a mapping")
    return name, spec
