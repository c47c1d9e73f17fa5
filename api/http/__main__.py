"""`penguinmails-api` / `python -m penguinmails.api.http`: serve the API with uvicorn.

python -m penguinmails.api.http [--host 0.0.0.0] [--port 8000]
python -m penguinmails.api.http new-signing-key [KID]   # an entry for PM_API_SIGNING_KEYS
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

import uvicorn

from .app import create_app
from .config import ApiSettings
from .tokens import new_signing_key


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "new-signing-key":
        print(new_signing_key(args[1] if len(args) > 1 else datetime.now(UTC).strftime("%Y-%m")))
        return 0
    parser = argparse.ArgumentParser(prog="penguinmails-api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    options = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = ApiSettings.from_env()
    except ValueError as error:
        print(f"penguinmails-api: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings),
        host=options.host,
        port=options.port,
        log_level="info",
        proxy_headers=True,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
