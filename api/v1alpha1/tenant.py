"""Tenant: a customer of the platform (cluster-scoped).

The operator gives each Tenant a namespace ``tenant-<name>`` with the quotas, RBAC, network
policy and sender Deployment of its tier. The other kinds live in that namespace.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    AGE_COLUMN,
    DNS_LABEL_PATTERN,
    GROUP_VERSION,
    MESSAGE_COLUMN,
    READY_COLUMN,
    ConditionedStatus,
    EmailAddress,
    KubeModel,
    PrinterColumn,
    Resource,
    ResourceInfo,
    SingleLine,
    cel,
    validations,
)
from .tiers import Tier

TENANT_NAMESPACE_PREFIX = "tenant-"
TENANT_NAME_MAX_LENGTH = 63 - len(TENANT_NAMESPACE_PREFIX)  # 56: the namespace is a DNS label


def tenant_namespace(tenant_name: str) -> str:
    """The namespace that belongs to the tenant ``tenant_name``."""
    return f"{TENANT_NAMESPACE_PREFIX}{tenant_name}"


def validate_tenant_name(name: str) -> str:
    """``name`` if it can name a Tenant (a DNS label of at most 56 characters), else ValueError."""
    if len(name) > TENANT_NAME_MAX_LENGTH or not re.fullmatch(DNS_LABEL_PATTERN, name):
        raise ValueError(
            f"metadata.name {name!r} cannot name a Tenant: use at most {TENANT_NAME_MAX_LENGTH} "
            "lower-case letters, digits and '-', starting and ending with a letter or digit "
            f"(the tenant's namespace is {TENANT_NAMESPACE_PREFIX}<name>)"
        )
    return name


class TenantConditionType(StrEnum):
    """Condition types of a Tenant."""

    READY = "Ready"
    """The namespace and everything in it matches the spec and tier."""
    NAMESPACE_READY = "NamespaceReady"
    """The namespace, quota, RBAC and network policy exist and match the tier."""
    SUSPENDED = "Suspended"
    """Sending is stopped because spec.suspended is true (or billing suspended the tenant)."""
    SENDERS_SCHEDULED = "SendersScheduled"
    """No sender pod is waiting for a node; False (Unschedulable, quoting the scheduler) makes
    Ready False too: e.g. business/enterprise senders with no dedicated-pool node."""


class PostalAddress(KubeModel):
    """A physical postal address, printed in the footer of every message (CAN-SPAM)."""

    street: SingleLine = Field(
        min_length=1, max_length=200, description="Street address (first line)."
    )
    street2: SingleLine | None = Field(
        default=None, max_length=200, description="Second address line (suite, PO box...)."
    )
    city: SingleLine = Field(min_length=1, max_length=100, description="City or locality.")
    region: SingleLine | None = Field(
        default=None, max_length=100, description="State, province or region."
    )
    postal_code: SingleLine | None = Field(
        default=None, max_length=20, description="Postal or ZIP code."
    )
    country: str = Field(
        pattern=r"^[A-Z]{2}$",
        min_length=2,
        max_length=2,
        description="Country as an ISO 3166-1 alpha-2 code, e.g. US, DE.",
    )

    def lines(self) -> list[str]:
        """The address as footer lines."""
        locality = " ".join(p for p in (self.postal_code, self.city) if p)
        if self.region:
            locality = f"{locality}, {self.region}"
        return [line for line in (self.street, self.street2, locality, self.country) if line]


class BillingSettings(KubeModel):
    """Links the tenant to its billing records (Stripe); written by the platform, not customers."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.stripeSubscriptionId) || has(self.stripeCustomerId)",
                "billing.stripeSubscriptionId requires billing.stripeCustomerId",
                field_path=".stripeSubscriptionId",
            )
        )
    )

    stripe_customer_id: str | None = Field(
        default=None,
        pattern=r"^cus_[A-Za-z0-9]+$",
        max_length=255,
        description="Stripe customer id (cus_...).",
    )
    stripe_subscription_id: str | None = Field(
        default=None,
        pattern=r"^sub_[A-Za-z0-9]+$",
        max_length=255,
        description="Stripe subscription id (sub_...) that pays for the tier.",
    )

    @model_validator(mode="after")
    def _subscription_needs_customer(self) -> BillingSettings:
        if self.stripe_subscription_id is not None and self.stripe_customer_id is None:
            raise ValueError("billing.stripeSubscriptionId requires billing.stripeCustomerId")
        return self


class TenantSpec(KubeModel):
    """Desired state of a Tenant."""

    tier: Tier = Field(
        description=(
            "Commercial tier: starter, professional, business or enterprise. Decides quotas, "
            "object limits, sender size and scheduling (see docs/resources.md)."
        )
    )
    display_name: SingleLine | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Human-readable name of the customer, e.g. Acme Corp.",
    )
    contact_email: EmailAddress = Field(
        description="Where the platform sends notices about this tenant (suspension, limits).",
    )
    postal_address: PostalAddress | None = Field(
        default=None,
        description=(
            "Physical postal address printed in every message footer (CAN-SPAM). Campaigns do "
            "not start without it."
        ),
    )
    suspended: bool = Field(
        default=False,
        description="Stop all sending of this tenant (sender scaled to zero, campaigns paused).",
    )
    suspend_reason: SingleLine | None = Field(
        default=None,
        max_length=1024,
        description="Why the tenant is suspended; shown to the customer.",
    )
    billing: BillingSettings | None = Field(
        default=None, description="Billing references (Stripe)."
    )


class TenantStatus(ConditionedStatus):
    """Observed state of a Tenant."""

    namespace: str | None = Field(
        default=None, max_length=63, description="Namespace created for the tenant."
    )
    tier: Tier | None = Field(
        default=None, description="Tier the namespace is currently sized for."
    )
    sender_replicas: int | None = Field(
        default=None, ge=0, description="Current replicas of the tenant's sender Deployment."
    )
    emails_sent_this_month: int | None = Field(
        default=None, ge=0, description="Messages sent in the current calendar month (UTC)."
    )


TENANT_NAME_RULES = (
    cel(
        f"self.metadata.name.size() <= {TENANT_NAME_MAX_LENGTH}",
        f"metadata.name must be at most {TENANT_NAME_MAX_LENGTH} characters: the tenant's "
        f"namespace is {TENANT_NAMESPACE_PREFIX}<name> (max 63); choose a shorter name",
    ),
    cel(
        f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
        "metadata.name must be a DNS label (lower-case letters, digits and '-', starting and "
        "ending with a letter or digit, no dots): it becomes part of the namespace name",
    ),
)


class Tenant(Resource):
    """A customer of the platform and the namespace it sends from."""

    resource_info = ResourceInfo(
        kind="Tenant",
        plural="tenants",
        singular="tenant",
        scope="Cluster",
        short_names=("tn",),
        printer_columns=(
            PrinterColumn("Tier", "string", ".spec.tier", "Commercial tier."),
            PrinterColumn("Namespace", "string", ".status.namespace", "The tenant's namespace."),
            PrinterColumn(
                "Suspended", "boolean", ".spec.suspended", "Whether sending is suspended."
            ),
            READY_COLUMN,
            AGE_COLUMN,
            MESSAGE_COLUMN,
        ),
        spec_model=TenantSpec,
        status_model=TenantStatus,
        validations=TENANT_NAME_RULES,
    )

    api_version: Literal["penguinmails.io/v1alpha1"] = Field(
        default=GROUP_VERSION, description="API version (penguinmails.io/v1alpha1)."
    )
    kind: Literal["Tenant"] = Field(default="Tenant", description="Kind.")
    spec: TenantSpec = Field(description="Desired state.")
    status: TenantStatus | None = Field(default=None, description="Observed state.")

    @model_validator(mode="after")
    def _name_is_a_namespace_suffix(self) -> Tenant:
        if "name" in self.metadata:
            validate_tenant_name(self.name)
        return self

    @property
    def namespace_name(self) -> str:
        """The namespace that belongs to this tenant."""
        return tenant_namespace(self.name)
