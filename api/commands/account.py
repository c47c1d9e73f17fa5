"""`penguinmails login` and `logout`: a user's sign-in (e-mail and password, asked for) or an
API key, stored in the credentials file (api/client/credentials.py)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from dataclasses import replace

from penguinmails.api.client import ApiError, Credentials, Session, credentials_path
from penguinmails.api.client import credentials as stored
from penguinmails.api.client.session import with_tokens

from .context import CliError, Parsers, api_url

__all__ = ["add_commands"]


def add_commands(commands: Parsers, common: argparse.ArgumentParser) -> None:
    login = commands.add_parser(
        "login",
        parents=[common],
        help="sign in to the API (e-mail and password, or an API key)",
        description="Sign in and store the credentials in "
        "$XDG_CONFIG_HOME/penguinmails/credentials (mode 0600).",
    )
    login.add_argument("--email", help="the account's e-mail address (asked for if not given)")
    login.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of asking",
    )
    login.add_argument(
        "--api-key",
        metavar="KEY",
        help="sign in with an API key (pm_live_...; '-' reads it from standard input); "
        "needs --tenant, the key's tenant",
    )
    login.set_defaults(run=_login)
    logout = commands.add_parser(
        "logout", parents=[common], help="sign out and forget the stored credentials"
    )
    logout.set_defaults(run=_logout)


def _first_line() -> str:
    return sys.stdin.readline().rstrip("\r\n")


def _ask(prompt: str, secret: bool) -> str:
    if not sys.stdin.isatty():
        raise CliError(
            "no terminal to ask on: pass --email and pipe the password with --password-stdin"
        )
    answer = getpass.getpass(prompt) if secret else input(prompt)
    return answer.strip() if not secret else answer


def _login(args: argparse.Namespace) -> int:
    path = credentials_path()
    try:
        previous = stored.load(path)
    except ValueError:
        previous = None  # replaced below
    url = api_url(args, previous)
    tenant = args.tenant or os.environ.get("PM_TENANT")
    if args.api_key is not None:
        saved = _with_api_key(url, tenant, args.api_key)
    else:
        saved = _with_password(url, tenant, args)
    if previous is not None and previous.is_user:
        # The old sign-in is no longer reachable from this machine: end it on the server too.
        with Session(previous) as old, contextlib.suppress(ApiError):
            old.request("POST", "/v1/auth/logout")
    stored.save(path, saved)
    who = saved.email or f"an API key of {saved.tenant}"
    where = f"; tenant {saved.tenant}" if saved.tenant else ""
    print(f"signed in to {url} as {who}{where}")
    return 0


def _with_api_key(url: str, tenant: str | None, given: str) -> Credentials:
    key = _first_line().strip() if given == "-" else given.strip()
    if not key:
        raise CliError("--api-key: the key is empty")
    if not tenant:
        raise CliError("--tenant is needed with --api-key: name the tenant the key belongs to")
    saved = Credentials(api_url=url, tenant=tenant, api_key=key)
    with Session(saved) as session:
        try:
            session.get(f"/v1/tenants/{tenant}/sending-domains", {"limit": 1})
        except ApiError as error:
            # 403: a valid key of this tenant without the domains scope; anything else is a
            # key that does not work here (401) or another tenant's (404).
            if error.status != 403:
                raise
    return saved


def _with_password(url: str, tenant: str | None, args: argparse.Namespace) -> Credentials:
    email = (args.email or _ask("E-mail: ", secret=False)).strip()
    password = _first_line() if args.password_stdin else _ask("Password: ", secret=True)
    if not email or not password:
        raise CliError("an e-mail address and a password are needed")
    with Session(Credentials(api_url=url)) as session:
        answer = session.request(
            "POST",
            "/v1/auth/token",
            json={"email": email, "password": password},
            authenticated=False,
        )
        session.credentials = with_tokens(Credentials(api_url=url, email=email), answer.json())
        memberships = [m["tenant"] for m in session.get("/v1/me")["memberships"]]
        if tenant is None and len(memberships) == 1:
            tenant = memberships[0]
        elif tenant is not None and tenant not in memberships:
            session.request("POST", "/v1/auth/logout")
            raise CliError(
                f"--tenant {tenant!r}: {email} is not a member of it"
                + (f" (member of: {', '.join(memberships)})" if memberships else "")
            )
        if tenant is None and memberships:
            print(
                f"member of {', '.join(memberships)}: pass --tenant to commands "
                "(or log in with --tenant) to choose one",
                file=sys.stderr,
            )
        return replace(session.credentials, tenant=tenant)


def _logout(args: argparse.Namespace) -> int:
    path = credentials_path()
    try:
        saved = stored.load(path)
    except ValueError:
        saved = None
    if saved is None:
        stored.delete(path)
        print("not signed in")
        return 0
    if saved.is_user:
        with Session(saved, path) as session:
            try:
                session.request("POST", "/v1/auth/logout")
            except ApiError as error:
                # 401: already signed out or expired there; anything else (the API down) keeps
                # the file so that the sign-in can still be revoked by trying again.
                if error.status != 401:
                    raise CliError(f"{error} (still signed in; try again)") from error
    stored.delete(path)
    if saved.api_key:
        print(
            "signed out; the API key itself still works until revoked (`penguinmails keys revoke`)"
        )
    else:
        print("signed out")
    return 0
