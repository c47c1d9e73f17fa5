"""Run every benchmark, each against a fresh local stack: `python -m penguinmails.bench`, or
only some by name: `python -m penguinmails.bench api tenants` (`make bench BENCH=api`).

A fresh stack per benchmark, so that objects one leaves behind (500 SendingDomains, 1,000
Tenants...) are not resumed by the next one's operator and counted in its time.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from penguinmails.bench import api, latency, sending, sendingdomains, signing, smtpservers, tenants
from penguinmails.devstack.stack import Stack

BENCHMARKS = (sendingdomains, smtpservers, tenants, latency, sending, api)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    names = {b.__name__.rsplit(".", 1)[1]: b for b in BENCHMARKS}
    wanted = sys.argv[1:] if argv is None else argv
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(names)}", file=sys.stderr)
        return 2
    if not wanted:
        signing.run()  # no stack: the signer alone, against its baseline
    for benchmark in [names[n] for n in wanted] or BENCHMARKS:
        base = Path(tempfile.mkdtemp(prefix="penguinmails-bench-"))
        try:
            with Stack(base) as stack:
                benchmark.run(stack, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
