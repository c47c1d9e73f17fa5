"""`python -m penguinmails.devstack build | run`: build the control plane, or run the whole stack.

`run` starts the control plane, PostgreSQL, Redis and a node, installs the CRDs, runs the operator
and the customer API, applies examples/ and waits for Ctrl-C, then stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from penguinmails.api.http.tokens import new_signing_key
from penguinmails.devstack import controlplane, dns_examples, images, stripe_mock
from penguinmails.devstack.api import ApiProcess, api_login
from penguinmails.devstack.knot import KnotServer
from penguinmails.devstack.stack import (
    OPERATOR_COMMAND,
    REPO_ROOT,
    Stack,
    api_client_for,
    apply_documents,
    load_documents,
)


def _build() -> int:
    result = controlplane.build()
    if result.cached:
        print(f"control plane {controlplane.KUBERNETES_VERSION}: cached in {result.bin_dir}")
    else:
        print(
            f"control plane {controlplane.KUBERNETES_VERSION}: built in {result.seconds:.0f}s "
            f"into {result.bin_dir}"
        )
    # Stripe's API mock, which the billing tests run.
    mock = stripe_mock.build()
    state = "cached" if mock.cached else f"built in {mock.seconds:.0f}s"
    print(f"stripe-mock {stripe_mock.STRIPE_MOCK_VERSION}: {state} in {mock.binary}")
    # The node's images, so that tests and `make run` find them cached.
    for image in images.build_all():
        phases = ", ".join(f"{k} {v:.0f}s" for k, v in image.timings.items())
        state = "cached" if image.cached else "built"
        print(f"image {image.name}: {state} in {image.path}{' (' + phases + ')' if phases else ''}")
    return 0


def _run(keep: bool) -> int:
    base = Path(tempfile.mkdtemp(prefix="penguinmails-"))
    stop = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        with Stack(base, with_node=True) as stack:
            for step, seconds in stack.timings.items():
                print(f"  {step}: {seconds:.1f}s")
            # A private authoritative DNS server the example SendingDomain publishes to.
            knot = KnotServer(base / "dns", zones=dns_examples.ZONES).start()
            operator_log = (base / "operator.log").open("ab")
            operator = subprocess.Popen(
                list(OPERATOR_COMMAND),
                env={
                    **os.environ,
                    **stack.env(),
                    **dns_examples.operator_env(knot),
                    "PM_METRICS_PORT": "0",
                },
                stdout=operator_log,
                stderr=subprocess.STDOUT,
            )
            # The webhook dispatcher (common/webhook_dispatch.py), on the platform's login.
            dispatcher = subprocess.Popen(
                [sys.executable, "-m", "penguinmails.common.webhook_dispatch"],
                env={**os.environ, **stack.env()},
                stdout=operator_log,
                stderr=subprocess.STDOUT,
            )
            customer_api: ApiProcess | None = None
            try:
                # The customer API with its own database login (the local stack's Kubernetes
                # identity is the admin's; the chart gives it its own ServiceAccount).
                api_database_url = asyncio.run(
                    api_login(stack.database_url, "penguinmails_api_local")
                )
                customer_api = ApiProcess(
                    base,
                    {
                        "PM_API_DATABASE_URL": api_database_url,
                        "PM_REDIS_URL": stack.redis_url,
                        "PM_API_SIGNING_KEYS": new_signing_key("local"),
                        "PM_KUBECONFIG": str(stack.kubeconfig),
                        # Webhook endpoints on loopback, as for the operator.
                        "PM_EGRESS_ALLOW": stack.env()["PM_EGRESS_ALLOW"],
                        # GDPR export and erasure need the platform's key ring (else 503).
                        **{k: v for k, v in os.environ.items() if k == "PM_SUPPRESSION_KEY"},
                    },
                ).start()
                examples = sorted((REPO_ROOT / "examples").glob("*.yaml"))
                with api_client_for(stack.kubeconfig) as api:
                    apply_documents(api, load_documents(examples))
                    dns_examples.publish_examples(api, knot)
                kubectl = (
                    stack.control_plane.build_result.bin_dir / "kubectl"
                    if stack.control_plane and stack.control_plane.build_result
                    else Path("kubectl")
                )
                node_line = (
                    f"{stack.node.name} on {stack.node.bridge.name} ({stack.node.bridge.subnet})"
                    if stack.node is not None and stack.node.bridge is not None
                    else "none (an existing cluster brings its own)"
                )
                print(
                    f"\nPenguinMails is running.\n"
                    f"  kubeconfig:   {stack.kubeconfig}\n"
                    f"  database:     {stack.database_url}\n"
                    f"  redis:        {stack.redis_url}\n"
                    f"  dns:          {knot.address}:{knot.port} (zone {dns_examples.ZONE}, "
                    f"TSIG key {knot.tsig.name})\n"
                    f"  operator log: {base / 'operator.log'} (and the webhook dispatcher's)\n"
                    f"  api:          {customer_api.url}/v1/docs (log {customer_api.log_path})\n"
                    f"  node:         {node_line}\n\n"
                    f"Watch it with:\n"
                    f"  export KUBECONFIG={stack.kubeconfig}\n"
                    f"  {kubectl} get tenants -w\n"
                    f"  {kubectl} get penguinmails -A\n\n"
                    f"Create an account for the API (then POST {customer_api.url}/v1/auth/token):\n"
                    f"  PM_API_DATABASE_URL='{api_database_url}' {sys.executable} -m "
                    f"penguinmails.api.http create-user you@example.com --tenant <tenant>\n\n"
                    f"Ctrl-C stops everything."
                )
                while not stop and operator.poll() is None:
                    time.sleep(0.5)
                if operator.returncode not in (None, 0):
                    print(f"the operator exited with code {operator.returncode}; see its log")
            finally:
                if customer_api is not None:
                    customer_api.stop()
                if dispatcher.poll() is None:
                    dispatcher.terminate()  # SIGTERM: it finishes the tenant it is on
                    try:
                        dispatcher.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        dispatcher.kill()
                if operator.poll() is None:
                    operator.terminate()
                    try:
                        operator.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        operator.kill()
                operator_log.close()
                knot.stop()
    except KeyboardInterrupt:
        pass
    finally:
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("stopped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="penguinmails-dev", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find cached) control-plane binaries")
    run = commands.add_parser("run", help="run the whole local stack with the operator")
    run.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    if args.command == "build":
        return _build()
    return _run(args.keep)


if __name__ == "__main__":
    sys.exit(main())
