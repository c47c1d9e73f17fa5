"""`contacts import`: a CSV file into a contact list through the API's import job
(`POST .../contact-imports`, docs/api.md); `contacts imports ls`: the tenant's recent imports
(`GET .../contact-imports`, newest first).

The file is streamed to the API (never read whole here), the job is followed until it ends
with a progress bar on a terminal, and each skipped line is printed with its line number and
field. Exit status: 0 when every line was imported, 2 when lines were skipped (listed on
standard error), 1 when the import failed or could not start.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from penguinmails.api.client import Client

from .context import CliError, Parsers, api_command
from .output import age, emit_list, field
from .progress import ProgressBar

__all__ = ["POLL_SECONDS", "add_commands"]

CHUNK = 64 * 1024
POLL_SECONDS = 0.5
"""How often the job's progress is read while it runs."""


def add_commands(commands: Parsers, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("contacts", help="contact lists").add_subparsers(
        dest="action", required=True
    )
    importing = api_command(
        group, "import", common, "import a CSV file into a contact list", _import
    )
    importing.add_argument("--list", required=True, dest="list_name", help="contact list name")
    importing.add_argument("file", type=Path, help="CSV with a header row and an email column")
    imports = group.add_parser("imports", help="contact imports").add_subparsers(
        dest="imports_action", required=True
    )
    listing = api_command(imports, "ls", common, "list recent imports, newest first", _imports_ls)
    listing.add_argument(
        "--limit", type=_positive, default=20, help="how many imports to show (default 20)"
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _import_row(job: dict[str, Any]) -> list[str]:
    total = job["bytesTotal"]
    done = 100 if job["state"] != "running" or not total else job["bytesDone"] * 100 // total
    return [
        field(job, "id"),
        field(job, "listName"),
        field(job, "state"),
        f"{done}%",
        field(job, "rowsDone"),
        field(job, "imported"),
        field(job, "skipped"),
        age(job.get("createdAt")),
    ]


def _imports_ls(api: Client, args: argparse.Namespace) -> None:
    emit_list(
        args.output,
        itertools.islice(api.list_imports(), args.limit),
        ["ID", "LIST", "STATE", "PROGRESS", "ROWS", "IMPORTED", "SKIPPED", "AGE"],
        _import_row,
    )


def _import(api: Client, args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        size = path.stat().st_size
    except OSError as error:
        raise CliError(f"{path}: {error.strerror or error}") from error
    bar = ProgressBar(sys.stderr, f"uploading {path.name}")

    def chunks() -> Iterator[bytes]:
        sent = 0
        with path.open("rb") as source:
            while chunk := source.read(CHUNK):
                sent += len(chunk)
                bar(sent, size)
                yield chunk

    job = api.upload_contacts(args.list_name, chunks, size)
    bar.label = f"importing {path.name}"
    while job["state"] == "running":
        bar(job["bytesDone"], job["bytesTotal"], f"{job['rowsDone']} rows")
        time.sleep(POLL_SECONDS)
        job = api.get_import(job["id"])
    bar.finish()
    if job["state"] == "failed":
        raise CliError(f"the import of {path} failed: {job['failure']}")
    errors = list(api.import_errors(job["id"])) if job["skipped"] else []
    if args.output == "json":
        print(json.dumps({**job, "errors": errors}, indent=2))
    else:
        for skipped in errors:
            where = f"line {skipped['line']}"
            where += f", {skipped['field']}" if skipped["field"] else ""
            print(f"{path}: {where}: {skipped['message']}", file=sys.stderr)
        print(
            f"imported {job['imported']} contacts into {args.list_name}, skipped {job['skipped']}"
        )
    return 2 if job["skipped"] else 0
