"""The objects a Tenant owns, checked as data: sizes per tier, ownership, isolation."""

from __future__ import annotations

import pytest

from penguinmails.api.v1alpha1.tiers import TIERS, Tier
from penguinmails.operator import tenant_resources as res


def tenant(tier: Tier = Tier.STARTER) -> res.TenantRef:
    return res.TenantRef(name="acme", uid="0000-uid", tier=tier)


EGRESS = res.TenantEgress(
    database=res.Destination(("10.20.0.5/32",), (5432,)),
    redis=res.Destination(("10.20.0.6/32",), (6379,)),
    api_server=res.Destination(("192.168.1.10/32",), (6443,)),
    smtp_allowed=("10.99.0.0/24",),
    cluster=("10.0.0.0/16", "198.18.0.0/15", "fd00:10::/64"),
)


def children(tier: Tier = Tier.STARTER, replicas: int = 0) -> list[res.Manifest]:
    return res.children(tenant(tier), image="img:1", replicas=replicas, egress=EGRESS)


def by_kind(tier: Tier, replicas: int = 0) -> dict[str, res.Manifest]:
    """Children by kind; NetworkPolicies (two) by `NetworkPolicy/<name>`."""
    return {
        m["kind"] + (f"/{m['metadata']['name']}" if m["kind"] == "NetworkPolicy" else ""): m
        for m in children(tier, replicas)
    }


def test_every_child_lives_in_the_tenant_namespace_and_is_owned_by_the_tenant() -> None:
    for manifest in children():
        meta = manifest["metadata"]
        assert meta["namespace"] == "tenant-acme"
        (owner,) = meta["ownerReferences"]
        assert owner == {
            "apiVersion": "penguinmails.io/v1alpha1",
            "kind": "Tenant",
            "name": "acme",
            "uid": "0000-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert meta["labels"]["penguinmails.io/tenant"] == "acme"


def test_namespace_is_owned_labelled_and_restricted() -> None:
    ns = res.namespace(tenant(Tier.STARTER))
    assert ns["metadata"]["name"] == "tenant-acme"
    labels = ns["metadata"]["labels"]
    assert labels["penguinmails.io/tier"] == "starter"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "namespace" not in ns["metadata"]


@pytest.mark.parametrize("tier", list(Tier))
def test_namespace_enforces_the_tiers_level_and_always_warns_restricted(tier: Tier) -> None:
    """Only the dedicated-pool tiers relax enforcement (to baseline, for in-cluster MailU);
    every tier warns and audits at restricted, so nothing runs below it unnoticed."""
    labels = res.namespace(tenant(tier))["metadata"]["labels"]
    dedicated = bool(TIERS[tier].node_selector)
    enforce = labels["pod-security.kubernetes.io/enforce"]
    assert enforce == ("baseline" if dedicated else "restricted")
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize("tier", list(Tier))
def test_quota_caps_the_penguinmails_kinds_and_compute_per_tier(tier: Tier) -> None:
    limits = TIERS[tier]
    hard = by_kind(tier)["ResourceQuota"]["spec"]["hard"]
    assert hard["count/sendingdomains.penguinmails.io"] == str(limits.sending_domains)
    assert hard["count/smtpservers.penguinmails.io"] == str(limits.smtp_servers)
    assert hard["count/campaigns.penguinmails.io"] == str(limits.campaigns)
    assert hard["limits.cpu"] == limits.quota_cpu
    assert hard["pods"] == str(limits.quota_pods)


def test_tier_change_resizes_the_sender() -> None:
    small = by_kind(Tier.STARTER)["Deployment"]["spec"]["template"]["spec"]
    large = by_kind(Tier.ENTERPRISE)["Deployment"]["spec"]["template"]["spec"]
    assert small["containers"][0]["resources"] != large["containers"][0]["resources"]
    assert small["priorityClassName"] == TIERS[Tier.STARTER].priority_class
    assert large["priorityClassName"] == TIERS[Tier.ENTERPRISE].priority_class
    if TIERS[Tier.ENTERPRISE].node_selector:
        assert large["nodeSelector"] == dict(TIERS[Tier.ENTERPRISE].node_selector)
    if not TIERS[Tier.STARTER].node_selector:
        assert "nodeSelector" not in small


def test_sender_runs_non_root_with_nothing_extra() -> None:
    pod = by_kind(Tier.STARTER)["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["serviceAccountName"] == res.SENDER_NAME


def test_network_policy_denies_all_ingress() -> None:
    spec = by_kind(Tier.STARTER)["NetworkPolicy/default-deny-ingress"]["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_egress_allows_dns_database_redis_api_and_smtp_only() -> None:
    spec = by_kind(Tier.STARTER)["NetworkPolicy/egress"]["spec"]
    assert spec["podSelector"] == {} and spec["policyTypes"] == ["Egress"]
    dns, database, redis, api, smtp = spec["egress"]
    (kube_dns,) = dns["to"]
    assert kube_dns["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"
    }
    assert kube_dns["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert database == {
        "to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert redis == {
        "to": [{"ipBlock": {"cidr": "10.20.0.6/32"}}],
        "ports": [{"protocol": "TCP", "port": 6379}],
    }
    assert api["to"] == [{"ipBlock": {"cidr": "192.168.1.10/32"}}]
    assert smtp["ports"] == [{"protocol": "TCP", "port": p} for p in (25, 465, 587)]
    v4, v6, allowed, same_namespace = smtp["to"]
    assert v4["ipBlock"]["cidr"] == "0.0.0.0/0"
    # Private, loopback, link-local (metadata) and the cluster's ranges are not the Internet;
    # 10.0.0.0/16 is inside 10.0.0.0/8 already, 198.18.0.0/15 is added.
    assert v4["ipBlock"]["except"] == [
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "198.18.0.0/15",
    ]
    assert v6["ipBlock"] == {"cidr": "::/0", "except": ["::1/128", "fc00::/7", "fe80::/10"]}
    assert allowed == {"ipBlock": {"cidr": "10.99.0.0/24"}}  # PM_EGRESS_ALLOW: a private relay
    assert same_namespace == {"podSelector": {}}  # MailU in the tenant's namespace


def test_egress_without_cidrs_opens_only_the_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE", "REDIS", "APISERVER"):
        monkeypatch.delenv(f"PM_TENANT_{name}_CIDRS", raising=False)
        monkeypatch.delenv(f"PM_TENANT_{name}_PORTS", raising=False)
    monkeypatch.setenv("PM_TENANT_DATABASE_CIDRS", "10.1.2.3")
    monkeypatch.setenv("PM_TENANT_REDIS_PORTS", "6380")
    egress = res.TenantEgress.from_env()
    assert egress.database == res.Destination(("10.1.2.3/32",), (5432,))
    assert egress.redis == res.Destination((), (6380,))
    spec = res.egress_policy(tenant(), egress)["spec"]
    assert spec["egress"][2] == {"ports": [{"protocol": "TCP", "port": 6380}]}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PM_TENANT_DATABASE_CIDRS", "db.internal", "PM_TENANT_DATABASE_CIDRS: 'db.internal'"),
        ("PM_TENANT_REDIS_PORTS", "redis", "PM_TENANT_REDIS_PORTS='redis'"),
    ],
)
def test_bad_egress_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        res.TenantEgress.from_env()


def test_sender_role_is_read_only_on_penguinmails_kinds() -> None:
    rules = by_kind(Tier.STARTER)["Role"]["rules"]
    crd_rule = next(r for r in rules if r["apiGroups"] == ["penguinmails.io"])
    assert set(crd_rule["verbs"]) == {"get", "list", "watch"}
    # Secrets only by name: its own here, the others per Campaign (campaign_secret_access).
    (secrets,) = [r for r in rules if "secrets" in r["resources"]]
    assert secrets == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "verbs": ["get"],
        "resourceNames": [res.SENDER_NAME],
    }


def test_a_campaign_grants_its_sender_exactly_the_secrets_of_its_plan() -> None:
    role, binding = res.campaign_secret_access(
        "tenant-acme", "hello", "u-1", ["acme-dkim", "mx-relay", "pool-a-relay", "acme-dkim"]
    )
    assert (
        role["metadata"]["name"]
        == binding["metadata"]["name"]
        == "penguinmails-sender-campaign-u-1"
    )
    assert role["metadata"]["namespace"] == "tenant-acme"
    (owner,) = role["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Campaign", "hello", "u-1")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["acme-dkim", "mx-relay", "pool-a-relay"],
        }
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": res.SENDER_NAME, "namespace": "tenant-acme"}
    ]


@pytest.mark.parametrize(
    ("suspended", "active", "expected"),
    [
        (False, 0, 0),
        (True, 3, 0),
        (False, 1, 1),
        (False, 10_000, TIERS[Tier.STARTER].sender_max_replicas),
    ],
)
def test_sender_replicas_follow_active_campaigns(
    suspended: bool, active: int, expected: int
) -> None:
    limits = TIERS[Tier.STARTER]
    assert res.desired_replicas(limits, suspended=suspended, active_campaigns=active) == expected


def test_only_sending_unpaused_campaigns_are_active() -> None:
    assert res.is_active_campaign({"status": {"phase": "Sending"}, "spec": {}})
    assert not res.is_active_campaign({"status": {"phase": "Sending"}, "spec": {"paused": True}})
    assert not res.is_active_campaign({"status": {"phase": "Completed"}, "spec": {}})
    assert not res.is_active_campaign({"spec": {}})


def test_one_priority_class_per_tier_higher_tiers_first() -> None:
    classes = res.priority_classes()
    assert len({c["metadata"]["name"] for c in classes}) == len(Tier)
    values = [c["value"] for c in classes]
    assert values == sorted(values)


def test_sender_gets_its_connection_settings_from_its_own_secret() -> None:
    container = by_kind(Tier.STARTER)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": res.SENDER_NAME}}]


def test_sender_secret_copies_only_what_the_sender_needs() -> None:
    platform = {
        "PM_DATABASE_URL": "ZGI=",
        "PM_REDIS_URL": "cg==",
        "PM_TOKEN_KEY": "dA==",
        "PM_SUPPRESSION_KEY": "aw==",
        "STRIPE_API_KEY": "c2s=",
    }
    secret = res.sender_secret(tenant(), platform)
    assert secret["metadata"]["namespace"] == "tenant-acme"
    assert secret["data"] == {k: platform[k] for k in res.TENANT_SECRET_KEYS}
    assert "PM_SUPPRESSION_KEY" not in secret["data"]  # the platform's master key
    assert "STRIPE_API_KEY" not in secret["data"]


def _pod(
    tenant: str | None = "acme",
    scheduled: tuple[str, str, str] | None = None,
    *,
    app: str = res.SENDER_NAME,
    deleting: bool = False,
) -> dict[str, object]:
    labels = {"app.kubernetes.io/name": app} | ({res.TENANT_LABEL: tenant} if tenant else {})
    metadata: dict[str, object] = {"name": "p", "labels": labels}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    conditions = []
    if scheduled is not None:
        status, reason, message = scheduled
        conditions.append(
            {"type": "PodScheduled", "status": status, "reason": reason, "message": message}
        )
    return {"metadata": metadata, "status": {"conditions": conditions}}


UNSCHEDULABLE = ("False", "Unschedulable", "0/1 nodes are available:\n 1 node(s) didn't match")


def test_sender_placement_counts_only_live_sender_pods_the_scheduler_refused() -> None:
    pods = [
        _pod(scheduled=UNSCHEDULABLE),
        _pod(scheduled=("True", "", "")),
        _pod(),  # not decided yet: not counted as stuck
        _pod(scheduled=UNSCHEDULABLE, deleting=True),  # going away: not counted at all
        _pod(scheduled=UNSCHEDULABLE, app="mailu-front"),  # MailU in the namespace
    ]
    placement = res.sender_placement(pods)
    assert placement == res.SenderPlacement(
        pods=3, unschedulable=1, scheduler_message="0/1 nodes are available: 1 node(s) didn't match"
    )
    assert res.sender_placement([]) == res.SenderPlacement(0, 0, "")


def test_the_scheduler_message_quoted_is_one_bounded_line() -> None:
    long = ("False", "Unschedulable", "x\n" * 2000)
    message = res.sender_placement([_pod(scheduled=long)]).scheduler_message
    assert len(message) == res.SCHEDULER_MESSAGE_MAX and "\n" not in message
    assert message.endswith("...")


def test_the_hint_names_the_pool_each_tier_needs() -> None:
    taint = "penguinmails.io/pool=dedicated:NoSchedule"
    for tier in (Tier.BUSINESS, Tier.ENTERPRISE):
        hint = res.unschedulable_hint(tier)
        assert f"labelled penguinmails.io/pool=dedicated and tainted {taint}" in hint
    for tier in (Tier.STARTER, Tier.PROFESSIONAL):
        assert f"outside the dedicated pool (they do not tolerate {taint})" in (
            res.unschedulable_hint(tier)
        )


def test_the_pod_watch_nudges_a_tenant_only_when_its_report_changes() -> None:
    refused = _pod(scheduled=UNSCHEDULABLE)
    placed = _pod(scheduled=("True", "", ""))
    assert res.scheduling_state(_pod()) == ""
    assert res.scheduling_state(refused) == "False"
    assert res.scheduling_state(placed) == "True"
    assert res.scheduling_state(placed, deleted=True) == "Gone"
    news = res.scheduling_news
    assert news("", "False")  # refused (also the first sight after an operator restart)
    assert news("False", "True")  # placed after all
    assert news("False", "Gone")  # a refused pod went away
    assert not news("", "True")  # placed at once: nothing to report
    assert not news("True", "Gone")
    assert not news("False", "False")  # the scheduler retried: same report
    assert not news("", "")  # not decided yet
