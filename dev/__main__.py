"""`python -m penguinmails.devstack build | run`: build the control plane, or run the whole stack.

`run` starts the control plane, PostgreSQL, Redis and a node, installs the CRDs, installs the
chart with helm (the operator runs as a pod on the node), applies examples/, then delivers a
campaign as dev/demo.py sets it up: a Tenant, contacts imported with the CLI, an SmtpServer (the
local Postfix relay), a SendingDomain published to the local Knot and a Campaign whose sender
pods deliver into local Dovecot mailboxes. The customer API runs beside it as a process. It prints
how to read the mail and the Campaign's progress until Ctrl-C, then stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kubernetes.client import ApiClient, AppsV1Api, CustomObjectsApi
from kubernetes.client.rest import ApiException

from penguinmails.api.http.tokens import new_signing_key
from penguinmails.devstack import controlplane, images, kstatus, stripe_mock
from penguinmails.devstack.api import ApiProcess, api_login
from penguinmails.devstack.demo import (
    CAMPAIGN,
    GROUP,
    RECIPIENT_DOMAIN,
    VERSION,
    ZONE,
    Delivery,
    contacts_csv,
)
from penguinmails.devstack.dovecot import PASSWORD
from penguinmails.devstack.release import RELEASE
from penguinmails.devstack.stack import (
    REPO_ROOT,
    Stack,
    api_client_for,
    apply_documents,
    load_documents,
)

EXAMPLES = REPO_ROOT / "examples"


def _build() -> int:
    result = controlplane.build()
    if result.cached:
        print(f"control plane {controlplane.KUBERNETES_VERSION}: cached in {result.bin_dir}")
    else:
        print(
            f"control plane {controlplane.KUBERNETES_VERSION}: built in {result.seconds:.0f}s "
            f"into {result.bin_dir}"
        )
    # What the GitOps health tests run (tests/integration/test_kstatus.py).
    checker = kstatus.build()
    state = "cached" if checker.cached else f"built in {checker.seconds:.0f}s"
    print(f"kstatus: {state} into {checker.bin_dir}")
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


DEMO_TENANT = "adelie"
DEMO_CONTACTS = 20


def _run(keep: bool) -> int:
    base = Path(tempfile.mkdtemp(prefix="penguinmails-"))
    stop = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        with Stack(base, with_node=True) as stack:
            if stack.node is None:
                print("make run needs the embedded control plane: unset PM_KUBECONFIG")
                return 2
            # The chart installed by helm: the operator is a pod on the node, as in production.
            with (
                Delivery(
                    base / "demo",
                    stack.node,
                    stack.kubeconfig,
                    stack.database_url,
                    stack.redis_url,
                    dns_ttl=5,
                    # A demo shows the sender scale up and down within seconds, not a minute.
                    values={"operator": {"resyncSeconds": 10}},
                ) as delivery,
                _customer_api(base, stack) as (customer_api, api_database_url),
                _webhook_dispatcher(base, stack),
            ):
                for step, seconds in {**stack.timings, **delivery.timings}.items():
                    print(f"  {step}: {seconds:.1f}s")
                with api_client_for(stack.kubeconfig) as api:
                    apply_documents(api, load_documents(sorted(EXAMPLES.glob("*.yaml"))))
                    namespace = delivery.apply_tenant(api, DEMO_TENANT)
                    csv = contacts_csv(base / "contacts.csv", DEMO_CONTACTS)
                    imported = delivery.import_contacts(DEMO_TENANT, csv)
                    print(imported.stdout.strip() or imported.stderr.strip())
                    delivery.apply_campaign(api, namespace)
                    _print_running(stack, delivery, namespace, customer_api, api_database_url)
                    _follow(api, delivery, namespace, lambda: stop)
    except KeyboardInterrupt:
        pass
    finally:
        if keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("stopped.")
    return 0


@contextlib.contextmanager
def _customer_api(base: Path, stack: Stack) -> Iterator[tuple[ApiProcess, str]]:
    """The customer API with its own database login (the local stack's Kubernetes identity is
    the admin's; the chart gives it its own ServiceAccount)."""
    database_url = asyncio.run(api_login(stack.database_url, "penguinmails_api_local"))
    process = ApiProcess(
        base,
        {
            "PM_API_DATABASE_URL": database_url,
            "PM_REDIS_URL": stack.redis_url,
            "PM_API_SIGNING_KEYS": new_signing_key("local"),
            "PM_KUBECONFIG": str(stack.kubeconfig),
            # Webhook endpoints on loopback, as for the operator.
            "PM_EGRESS_ALLOW": stack.env()["PM_EGRESS_ALLOW"],
            # GDPR export and erasure need the platform's key ring (else 503).
            **{k: v for k, v in os.environ.items() if k == "PM_SUPPRESSION_KEY"},
        },
    ).start()
    try:
        yield process, database_url
    finally:
        process.stop()


@contextlib.contextmanager
def _webhook_dispatcher(base: Path, stack: Stack) -> Iterator[None]:
    """The webhook dispatcher (common/webhook_dispatch.py), on the platform's login."""
    with (base / "webhook-dispatcher.log").open("ab") as log:
        dispatcher = subprocess.Popen(
            [sys.executable, "-m", "penguinmails.common.webhook_dispatch"],
            env={**os.environ, **stack.env()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield
        finally:
            dispatcher.terminate()  # SIGTERM: it finishes the tenant it is on
            try:
                dispatcher.wait(timeout=20)
            except subprocess.TimeoutExpired:
                dispatcher.kill()


def _print_running(
    stack: Stack,
    delivery: Delivery,
    namespace: str,
    customer_api: ApiProcess,
    api_database_url: str,
) -> None:
    kubectl = (
        stack.control_plane.build_result.bin_dir / "kubectl"
        if stack.control_plane and stack.control_plane.build_result
        else Path("kubectl")
    )
    node = stack.node
    assert node is not None and node.bridge is not None
    imap = delivery.mailboxes.imap_port
    first = f"r0@{RECIPIENT_DOMAIN}"
    read_one = (
        f"python3 -c \"import imaplib; m = imaplib.IMAP4('127.0.0.1', {imap}); "
        f"m.login('{first}', '{PASSWORD}'); m.select(); "
        f"print(m.fetch(b'1', '(RFC822)')[1][0][1].decode())\""
    )
    print(
        f"\nPenguinMails is running.\n"
        f"  kubeconfig:   {stack.kubeconfig}\n"
        f"  node:         {node.name} on {node.bridge.name} ({node.bridge.subnet})\n"
        f"  operator:     chart release {RELEASE} in {delivery.namespace} (a pod on the node)\n"
        f"  database:     {stack.database_url}\n"
        f"  redis:        {stack.redis_url}\n"
        f"  dns:          127.0.0.1:{delivery.knot.port} (zone {ZONE}, "
        f"TSIG key {delivery.knot.tsig.name})\n"
        f"  relay:        Postfix 127.0.0.1:{delivery.relay.port} "
        f"(pods: {node.bridge.gateway}:{delivery.relay.port})\n"
        f"  api:          {customer_api.url}/v1/docs (log {customer_api.log_path})\n"
        f"  dashboard:    {customer_api.url}/ (sign in with the account below)\n\n"
        f"Campaign {namespace}/{CAMPAIGN} sends to r0..r{DEMO_CONTACTS - 1}@{RECIPIENT_DOMAIN}.\n"
        f"Read the mail with any IMAP client: 127.0.0.1 port {imap}, no TLS, user "
        f"r<N>@{RECIPIENT_DOMAIN}, password {PASSWORD}; or in one line:\n"
        f"  {read_one}\n"
        f"  (Maildirs under {delivery.mailboxes.mail_dir})\n\n"
        f"Watch it with:\n"
        f"  export KUBECONFIG={stack.kubeconfig}\n"
        f"  {kubectl} get campaigns,pods -n {namespace} -w\n"
        f"  {kubectl} logs -n {delivery.namespace} deploy/{RELEASE} -f\n\n"
        f"Create an account for the API and the dashboard ({customer_api.url}/):\n"
        f"  PM_API_DATABASE_URL='{api_database_url}' {sys.executable} -m "
        f"penguinmails.api.http create-user you@example.com --tenant {DEMO_TENANT}\n\n"
        f"Ctrl-C stops everything.\n"
    )


def _follow(
    api: ApiClient, delivery: Delivery, namespace: str, stopped: Callable[[], bool]
) -> None:
    """Print the Campaign's progress and the sender's replicas whenever they change."""
    custom = CustomObjectsApi(api)
    apps = AppsV1Api(api)
    last = ""
    while not stopped():
        status = (
            custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "campaigns", CAMPAIGN
            ).get("status")
            or {}
        )
        counts = status.get("counts") or {}
        try:
            sender = apps.read_namespaced_deployment("penguinmails-sender", namespace)
            replicas = f"{sender.status.ready_replicas or 0}/{sender.spec.replicas or 0}"
        except ApiException:
            replicas = "-"
        line = (
            f"campaign {CAMPAIGN}: {status.get('phase', 'Pending')}, "
            f"{counts.get('sent', 0)}/{counts.get('total', '?')} sent "
            f"({status.get('progress', 0)}%), sender pods ready {replicas}"
        )
        if line != last:
            print(time.strftime("%H:%M:%S"), line, flush=True)
            last = line
        time.sleep(2)


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
