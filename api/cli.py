"""The `penguinmails` command: the customer API's client, and the unsubscribe endpoint.

    penguinmails login                      # then: domains, servers, campaigns, keys, audit
    penguinmails campaigns create -f campaign.yaml
    penguinmails contacts import --list leads contacts.csv     # through the API's import job
    penguinmails unsubscribe serve --port 8088

The API commands (api/commands/, over the client in api/client/) need only a login; errors print
the API's message and the field it names, exit status 1 (`contacts import`: 2 when lines were
skipped). `unsubscribe serve` is operator-side: it reads `PM_DATABASE_URL` and
`PM_SUPPRESSION_KEY`. The platform operator's own import straight into the database (no API,
no account) is `penguinmails-api import-contacts`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from penguinmails.api.client import ApiError
from penguinmails.api.commands import account, admin, contacts, resources
from penguinmails.api.commands.context import CliError, common_options


def _run_api_command(args: argparse.Namespace) -> int:
    try:
        status: int = args.run(args)
    except (CliError, ApiError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="penguinmails", description="The customer API client and operator-side tasks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    for module in (account, resources, contacts, admin):
        module.add_commands(commands, common)
    unsubscribe = commands.add_parser("unsubscribe", help="the unsubscribe endpoint")
    unsubscribe.add_subparsers(dest="action", required=True).add_parser(
        "serve", help="serve the unsubscribe endpoint"
    ).add_argument("--port", type=int, default=8088)
    args = parser.parse_args(argv)
    if hasattr(args, "run"):
        return _run_api_command(args)
    dsn = os.environ.get("PM_DATABASE_URL", "")
    if not dsn:
        print("PM_DATABASE_URL is not set: point it at the platform database", file=sys.stderr)
        return 1
    from penguinmails.api.unsubscribe import serve

    asyncio.run(serve(dsn, port=args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
