"""Run every benchmark against a fresh local stack: `python -m penguinmails.bench`."""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from penguinmails.bench import sending, sendingdomains, smtpservers, tenants
from penguinmails.devstack.stack import Stack


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    base = Path(tempfile.mkdtemp(prefix="penguinmails-bench-"))
    try:
        with Stack(base) as stack:
            # Before tenants: its 1,000 Tenants would otherwise be resumed by this operator too.
            sendingdomains.run(stack, base)
            smtpservers.run(stack, base)
            tenants.run(stack, base)
            sending.run(stack, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
