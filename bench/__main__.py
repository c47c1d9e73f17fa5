"""Run every benchmark, each against a fresh local stack: `python -m penguinmails.bench`.

A fresh stack per benchmark, so that objects one leaves behind (500 SendingDomains, 1,000
Tenants...) are not resumed by the next one's operator and counted in its time.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from penguinmails.bench import sending, sendingdomains, signing, smtpservers, tenants
from penguinmails.devstack.stack import Stack

BENCHMARKS = (sendingdomains, smtpservers, tenants, sending)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    signing.run()  # no stack: the signer alone, against its baseline
    for benchmark in BENCHMARKS:
        base = Path(tempfile.mkdtemp(prefix="penguinmails-bench-"))
        try:
            with Stack(base) as stack:
                benchmark.run(stack, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
