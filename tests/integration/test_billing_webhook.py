"""Signed Stripe webhook deliveries driving Tenants on the real API server.

The router runs in uvicorn (tests/integration/billing_support.py); events are built and signed
here the way Stripe signs them; the Tenants live on the real API server, and in the life-cycle
test the operator (as it runs in production) sizes the namespace from what billing wrote.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from penguinmails.api.billing.plans import Plan, put_plan
from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.devstack.controlplane import write_kubeconfig
from penguinmails.devstack.stripe_mock import StripeMock
from tests.integration.billing_support import (
    Events,
    WebhookServer,
    billing_database_url,
    checkout_session,
    invoice,
    stripe_settings,
    subscription,
)
from tests.integration.conftest import (
    GROUP,
    VERSION,
    Cluster,
    OperatorFactory,
    OperatorProcess,
    wait_for,
)

pytestmark = pytest.mark.integration
__all__ = ["billing_database_url"]  # a fixture, used by name

STARTER = Plan(Tier.STARTER, "price_whStarterM", "price_whStarterY", 10_000, False)
BUSINESS = Plan(Tier.BUSINESS, "price_whBusinessM", "price_whBusinessY", 500_000, True)


@pytest.fixture(scope="module")
async def plans(db_pool: asyncpg.Pool) -> AsyncIterator[None]:
    await put_plan(db_pool, STARTER)
    await put_plan(db_pool, BUSINESS)
    yield
    await db_pool.execute("DELETE FROM billing_plans WHERE tier IN ('starter', 'business')")


def tenant_body(name: str, billing: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"tier": "starter", "contactEmail": f"ops@{name}.example.com"}
    if billing:
        spec["billing"] = billing
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_tenant(
    api: client.CustomObjectsApi, name: str, billing: dict[str, str] | None = None
) -> None:
    try:
        api.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        wait_for(lambda: get_tenant(api, name) is None, what=f"old Tenant {name} gone")
    except ApiException as error:
        if error.status != 404:
            raise
    api.create_cluster_custom_object(GROUP, VERSION, "tenants", tenant_body(name, billing))


def get_tenant(api: client.CustomObjectsApi, name: str) -> dict[str, Any] | None:
    try:
        return dict(api.get_cluster_custom_object(GROUP, VERSION, "tenants", name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def spec_of(api: client.CustomObjectsApi, name: str) -> dict[str, Any]:
    tenant = get_tenant(api, name)
    assert tenant is not None
    return dict(tenant["spec"])


def version_of(api: client.CustomObjectsApi, name: str) -> str:
    tenant = get_tenant(api, name)
    assert tenant is not None
    return str(tenant["metadata"]["resourceVersion"])


@pytest.fixture(scope="module")
def default_server(
    cluster: Cluster,
    crds_installed: list[str],
    billing_database_url: str,
    stripe_mock: StripeMock,
) -> Iterator[WebhookServer]:
    """The router with the production settings (tolerance 300 s, grace 3 days)."""
    server = WebhookServer(
        billing_database_url, cluster.kubeconfig, stripe_settings(stripe_mock.url)
    )
    yield server.start()
    server.stop()


def test_forged_stale_replayed_and_out_of_order_deliveries_change_nothing(
    plans: None, default_server: WebhookServer, custom_objects: client.CustomObjectsApi
) -> None:
    api = custom_objects
    server = default_server
    create_tenant(
        api, "billed", {"stripeCustomerId": "cus_billed", "stripeSubscriptionId": "sub_billed"}
    )
    create_tenant(api, "gitops")
    events = Events(time.time() - 3600, "guard")
    upgrade = events.make(
        "customer.subscription.updated",
        subscription("sub_billed", "cus_billed", "billed", "active", BUSINESS.price_monthly),
    )
    before = version_of(api, "billed")

    # A forged signature, a stale timestamp, no signature: refused before anything is read.
    assert server.deliver(upgrade, secret="whsec_forged").status_code == 400
    stale = server.deliver(upgrade, signed_at=time.time() - 300 - 60)
    assert stale.status_code == 400
    assert "timestamp" in stale.json()["error"].lower()
    assert server.deliver(upgrade, signature="").status_code == 400
    assert version_of(api, "billed") == before
    assert spec_of(api, "billed")["tier"] == "starter"

    # The real delivery applies; its replay (signed afresh, as a redelivery is) does nothing.
    applied = server.deliver(upgrade)
    assert applied.status_code == 200 and applied.json()["verdict"] == "applied"
    assert spec_of(api, "billed")["tier"] == "business"
    after_upgrade = version_of(api, "billed")
    replay = server.deliver(upgrade)
    assert replay.json()["verdict"] == "duplicate"

    # Out of order: the newer state arrives first; the older one (unpaid) must not suspend.
    older = events.make(
        "customer.subscription.updated",
        subscription("sub_billed", "cus_billed", "billed", "unpaid", BUSINESS.price_monthly),
    )
    newer = events.make(
        "customer.subscription.updated",
        subscription("sub_billed", "cus_billed", "billed", "active", BUSINESS.price_monthly),
    )
    assert server.deliver(newer).json()["verdict"] == "applied"
    assert server.deliver(older).json()["verdict"] == "stale"
    # A payment failure about an hour ago is within the 3-day default grace: still sending.
    failed = events.make("invoice.payment_failed", invoice("sub_billed", "cus_billed"))
    assert server.deliver(failed).json()["verdict"] == "applied"
    assert version_of(api, "billed") == after_upgrade
    assert not spec_of(api, "billed").get("suspended")

    # A GitOps-managed Tenant (no subscription) is never touched, whatever an event claims.
    gitops_before = version_of(api, "gitops")
    claim = events.make(
        "customer.subscription.updated",
        subscription("sub_gitops", "cus_gitops", "gitops", "canceled", BUSINESS.price_monthly),
    )
    outcome = server.deliver(claim).json()
    assert "left alone" in outcome["detail"]
    assert version_of(api, "gitops") == gitops_before

    # At the default grace period, past_due for 4 days has outlived it: suspended at once.
    create_tenant(
        api, "overdue", {"stripeCustomerId": "cus_overdue", "stripeSubscriptionId": "sub_overdue"}
    )
    four_days_ago = time.time() - 4 * 86400
    server.deliver(
        events.make(
            "customer.subscription.updated",
            subscription(
                "sub_overdue", "cus_overdue", "overdue", "past_due", STARTER.price_monthly
            ),
            created=four_days_ago,
        )
    )
    overdue = spec_of(api, "overdue")
    assert overdue["suspended"] is True
    since = datetime.fromtimestamp(int(four_days_ago), UTC)
    assert overdue["suspendReason"] == (
        f"Billing: the payment of the latest invoice failed on {since:%Y-%m-%d} and the 3-day "
        "grace period is over; update the payment method in the billing portal to resume sending"
    )
    print(f"webhook deliveries by verdict: {dict(server.tally)}")
    assert server.tally == {"refused": 3, "applied": 5, "duplicate": 1, "stale": 1}


def test_admin_suspension_stays_and_a_late_checkout_applies_what_came_first(
    plans: None, default_server: WebhookServer, custom_objects: client.CustomObjectsApi
) -> None:
    api = custom_objects
    server = default_server
    events = Events(time.time() - 600, "order")

    # An administrator suspended a paying tenant: a paid invoice does not lift that.
    billing = {"stripeCustomerId": "cus_held", "stripeSubscriptionId": "sub_held"}
    create_tenant(api, "held", billing)
    api.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "tenants",
        "held",
        {"spec": {"suspended": True, "suspendReason": "abuse report 12 under review"}},
    )
    for event in (
        events.make(
            "customer.subscription.updated",
            subscription("sub_held", "cus_held", "held", "past_due", STARTER.price_monthly),
        ),
        events.make("invoice.paid", invoice("sub_held", "cus_held")),
    ):
        assert server.deliver(event).json()["verdict"] == "applied"
    held = spec_of(api, "held")
    assert held["suspended"] is True
    assert held["suspendReason"] == "abuse report 12 under review"

    # The subscription's events come before Checkout's: nothing to change yet (the Tenant is
    # not linked), then Checkout links it and applies the state recorded meanwhile.
    create_tenant(api, "latecomer")
    early = server.deliver(
        events.make(
            "customer.subscription.created",
            subscription(
                "sub_late", "cus_late", "latecomer", "active", BUSINESS.price_yearly or ""
            ),
        )
    )
    assert "left alone" in early.json()["detail"]
    assert spec_of(api, "latecomer")["tier"] == "starter"
    linked = server.deliver(
        events.make(
            "checkout.session.completed", checkout_session("latecomer", "cus_late", "sub_late")
        )
    )
    assert linked.json()["detail"] == (
        "Tenant latecomer linked to sub_late; Tenant latecomer: tier=business"
    )
    late = spec_of(api, "latecomer")
    assert late["tier"] == "business"
    assert late["billing"] == {"stripeCustomerId": "cus_late", "stripeSubscriptionId": "sub_late"}


GRACE_SECONDS = 3.0
"""Shortened so the life cycle can watch a grace period end; the test above proves the same
path (past_due outliving the grace period suspends) at the 3-day default."""


@pytest.fixture(scope="module")
def short_grace_server(
    cluster: Cluster,
    crds_installed: list[str],
    billing_database_url: str,
    stripe_mock: StripeMock,
) -> Iterator[WebhookServer]:
    settings = stripe_settings(stripe_mock.url, grace_seconds=GRACE_SECONDS)
    server = WebhookServer(billing_database_url, cluster.kubeconfig, settings)
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def operator(operator_process: OperatorFactory) -> Iterator[OperatorProcess]:
    handle = operator_process()
    yield handle
    handle.stop()
    handle.assert_no_errors()


def condition(tenant: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in (tenant.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return {}


def wait_status(
    api: client.CustomObjectsApi, name: str, *, tier: str, suspended: bool
) -> dict[str, Any]:
    """The Tenant once the operator has sized it for `tier` and (un)suspended its sender."""

    def settled() -> dict[str, Any] | None:
        tenant = get_tenant(api, name)
        if tenant is None:
            return None
        status = tenant.get("status") or {}
        done = (
            status.get("observedGeneration") == tenant["metadata"]["generation"]
            and status.get("tier") == tier
            and condition(tenant, "Suspended").get("status") == ("True" if suspended else "False")
            and (status.get("senderReplicas") == 0 if suspended else True)
        )
        return tenant if done else None

    found: dict[str, Any] = wait_for(
        settled, what=f"Tenant {name} at {tier}, suspended={suspended}"
    )
    return found


def quota_pods(core: client.CoreV1Api, name: str) -> int:
    quota = core.read_namespaced_resource_quota("penguinmails-tier", f"tenant-{name}")
    return int(quota.spec.hard["pods"])


def test_life_cycle_driven_by_signed_events(
    plans: None,
    short_grace_server: WebhookServer,
    operator: OperatorProcess,
    custom_objects: client.CustomObjectsApi,
    core: client.CoreV1Api,
) -> None:
    api = custom_objects
    server = short_grace_server
    name, customer, sub = "lifecycle", "cus_lifecycle", "sub_lifecycle"
    create_tenant(api, name)
    wait_status(api, name, tier="starter", suspended=False)
    events = Events(time.time(), "life")

    def deliver(type_: str, obj: dict[str, Any], created: float | None = None) -> str:
        # Created now, as Stripe would: the grace period runs from the past_due event's time.
        event = events.make(type_, obj, created=created or time.time())
        response = server.deliver(event)
        assert response.status_code == 200, response.text
        print(f"{type_}: {response.json()}")
        return str(response.json()["verdict"])

    # Checkout: the tenant is linked to its customer and subscription.
    assert deliver("checkout.session.completed", checkout_session(name, customer, sub)) == "applied"
    assert spec_of(api, name)["billing"] == {
        "stripeCustomerId": customer,
        "stripeSubscriptionId": sub,
    }
    # Active on the business price: the tier and the namespace's quotas follow.
    deliver(
        "customer.subscription.created",
        subscription(sub, customer, name, "active", BUSINESS.price_monthly),
    )
    assert spec_of(api, name)["tier"] == "business"
    # Billing is a client of its own: GitOps tools see it as the owner of what it wrote.
    managers = {
        entry["manager"]: entry.get("fieldsV1", {})
        for entry in (get_tenant(api, name) or {})["metadata"]["managedFields"]
    }
    assert "f:tier" in managers["penguinmails-billing"]["f:spec"]
    assert "f:billing" in managers["penguinmails-billing"]["f:spec"]
    wait_status(api, name, tier="business", suspended=False)
    assert quota_pods(core, name) == TIERS[Tier.BUSINESS].quota_pods

    # past_due: still sending during the grace period, suspended once it is over.
    past_due = time.time()
    deliver(
        "customer.subscription.updated",
        subscription(sub, customer, name, "past_due", BUSINESS.price_monthly),
        created=past_due,
    )
    # Not suspended before the grace period is over (a slow API server under a full test run
    # can take that long to answer, so the check is about the clock, not about promptness).
    suspended_early = spec_of(api, name).get("suspended")
    assert not suspended_early or time.time() - past_due >= GRACE_SECONDS
    wait_for(lambda: spec_of(api, name).get("suspended"), what="suspension after the grace")
    reason = spec_of(api, name)["suspendReason"]
    assert reason.startswith("Billing: the payment of the latest invoice failed on ")
    assert reason.endswith("update the payment method in the billing portal to resume sending")
    wait_status(api, name, tier="business", suspended=True)

    # The invoice is paid: resumed, the reason gone.
    deliver("invoice.paid", invoice(sub, customer))
    resumed = spec_of(api, name)
    assert resumed["suspended"] is False and "suspendReason" not in resumed
    wait_status(api, name, tier="business", suspended=False)

    # Downgrade to starter: the tier and the quotas shrink.
    deliver(
        "customer.subscription.updated",
        subscription(sub, customer, name, "active", STARTER.price_yearly or ""),
    )
    assert spec_of(api, name)["tier"] == "starter"
    wait_status(api, name, tier="starter", suspended=False)
    assert quota_pods(core, name) == TIERS[Tier.STARTER].quota_pods

    # Canceled: suspended with a reason that says how to come back.
    deliver(
        "customer.subscription.deleted",
        subscription(sub, customer, name, "canceled", STARTER.price_yearly or ""),
    )
    canceled = spec_of(api, name)
    assert canceled["suspended"] is True
    assert canceled["suspendReason"] == (
        "Billing: the subscription was canceled; subscribe to a plan again to resume sending"
    )
    tenant = wait_status(api, name, tier="starter", suspended=True)
    assert "subscription was canceled" in condition(tenant, "Suspended")["message"]
    print(f"life-cycle deliveries by verdict: {dict(server.tally)}")
    assert server.tally == {"applied": 6}


def test_a_tenant_change_that_fails_is_not_recorded_and_the_redelivery_applies(
    plans: None,
    cluster: Cluster,
    crds_installed: list[str],
    billing_database_url: str,
    stripe_mock: StripeMock,
    api_client: client.ApiClient,
    custom_objects: client.CustomObjectsApi,
    tmp_path: Path,
) -> None:
    """The webhook's identity may read Tenants but not patch them (an RBAC mistake): Stripe gets
    a 500 and the event is not recorded, so once the Role is fixed its redelivery applies."""
    api = custom_objects
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    namespace, account, role = "billing-rbac-test", "billing-webhook", "billing-webhook-test"
    for create, body in (
        (core.create_namespace, {"metadata": {"name": namespace}}),
        (
            lambda b: core.create_namespaced_service_account(namespace, b),
            {"metadata": {"name": account}},
        ),
        (
            rbac.create_cluster_role_binding,
            {
                "metadata": {"name": role},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            },
        ),
    ):
        try:
            create(body)
        except ApiException as error:
            assert error.status == 409
    rules = [{"apiGroups": [GROUP], "resources": ["tenants"], "verbs": ["get"]}]
    try:
        rbac.delete_cluster_role(role)
    except ApiException as error:
        assert error.status == 404
    rbac.create_cluster_role({"metadata": {"name": role}, "rules": rules})
    token = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = tmp_path / "billing-webhook.kubeconfig"
    write_kubeconfig(kubeconfig, cluster.server, str(token), cluster.ca_file)
    server = WebhookServer(
        billing_database_url, kubeconfig, stripe_settings(stripe_mock.url)
    ).start()
    try:
        billing = {"stripeCustomerId": "cus_rbac", "stripeSubscriptionId": "sub_rbac"}
        create_tenant(api, "rbac", billing)
        event = Events(time.time(), "rbac").make(
            "customer.subscription.updated",
            subscription("sub_rbac", "cus_rbac", "rbac", "active", BUSINESS.price_monthly),
        )
        refused = server.deliver(event)
        assert refused.status_code == 500
        assert refused.json() == {"error": "not processed: ForbiddenError"}
        assert spec_of(api, "rbac")["tier"] == "starter"

        rbac.patch_cluster_role(role, {"rules": [{**rules[0], "verbs": ["get", "patch"]}]})
        redelivered = wait_for(
            lambda: (r := server.deliver(event)).status_code == 200 and r,
            what="the redelivery once billing may patch Tenants",
        )
        assert redelivered.json()["verdict"] == "applied"
        assert spec_of(api, "rbac")["tier"] == "business"
        print(f"rbac deliveries by verdict: {dict(server.tally)}")
        assert server.tally["applied"] == 1 and server.tally["failed"] >= 1
    finally:
        server.stop()
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
