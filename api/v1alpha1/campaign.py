"""Campaign: one message sent to an audience, within throttles, windows and stop rules."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from .common import (
    AGE_COLUMN,
    GROUP_VERSION,
    HTTPS_URL_PATTERN,
    LIST_SET,
    MESSAGE_COLUMN,
    READY_COLUMN,
    ConditionedStatus,
    Duration,
    EmailAddress,
    KubeModel,
    LocalObjectReference,
    PrinterColumn,
    Resource,
    ResourceInfo,
    SingleLine,
    StatusModel,
    WarmupSettings,
    cel,
    immutable,
    list_map,
    validations,
)
from .sendingdomain import LocalPart


class CampaignConditionType(StrEnum):
    """Condition types of a Campaign."""

    READY = "Ready"
    """The campaign is healthy: preflight passed and it is sending, waiting or complete."""
    PREFLIGHT = "Preflight"
    """The sending domain is verified, the servers are ready and the tenant may send."""
    SENDING = "Sending"
    """Messages are being handed to the sender pods now."""


class CampaignPhase(StrEnum):
    """Coarse lifecycle phase (conditions carry the details)."""

    PENDING = "Pending"
    """Waiting for preflight (domain verification, server health)."""
    SCHEDULED = "Scheduled"
    """Preflight passed; waiting for startAt or the sending window."""
    SENDING = "Sending"
    PAUSED = "Paused"
    """Paused by spec.paused or tenant suspension."""
    STOPPED = "Stopped"
    """Stopped by a stop rule (bounce or complaint rate); set paused and back to resume."""
    COMPLETED = "Completed"
    FAILED = "Failed"


class Weekday(StrEnum):
    """Day of the week."""

    MONDAY = "mon"
    TUESDAY = "tue"
    WEDNESDAY = "wed"
    THURSDAY = "thu"
    FRIDAY = "fri"
    SATURDAY = "sat"
    SUNDAY = "sun"


ContactListName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", min_length=1, max_length=128)
]


class MailAddress(KubeModel):
    """A mailbox: address plus optional display name."""

    address: EmailAddress = Field(description="E-mail address.")
    name: SingleLine | None = Field(
        default=None, max_length=256, description="Display name, e.g. Jane from Acme."
    )


class Audience(KubeModel):
    """Who receives the campaign: contact lists (stored in the platform database)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.excludeLists) || self.excludeLists.all(x, !(x in self.lists))",
                "a list cannot be in both audience.lists and audience.excludeLists",
                field_path=".excludeLists",
            )
        )
    )

    lists: list[ContactListName] = Field(
        min_length=1,
        max_length=50,
        description="Names of the contact lists to send to.",
        json_schema_extra=LIST_SET,
    )
    exclude_lists: list[ContactListName] = Field(
        default_factory=list,
        max_length=50,
        description="Names of contact lists whose members are skipped.",
        json_schema_extra=LIST_SET,
    )

    @model_validator(mode="after")
    def _disjoint(self) -> Audience:
        if set(self.lists) & set(self.exclude_lists):
            raise ValueError("a list cannot be in both audience.lists and audience.excludeLists")
        return self


class SendWindow(KubeModel):
    """When messages may go out (the recipient-facing business hours)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.startHour < self.endHour",
                "window.startHour must be before window.endHour",
                field_path=".endHour",
            )
        )
    )

    days: list[Weekday] = Field(
        default=[
            Weekday.MONDAY,
            Weekday.TUESDAY,
            Weekday.WEDNESDAY,
            Weekday.THURSDAY,
            Weekday.FRIDAY,
        ],
        min_length=1,
        max_length=7,
        description="Days on which sending is allowed.",
        json_schema_extra=LIST_SET,
    )
    start_hour: int = Field(
        default=8, ge=0, le=23, description="First hour (0-23) of the window, inclusive."
    )
    end_hour: int = Field(
        default=18, ge=1, le=24, description="Hour (1-24) at which the window ends, exclusive."
    )
    timezone: str = Field(
        default="UTC",
        pattern=r"^[A-Za-z][-A-Za-z0-9_+]*(/[A-Za-z0-9][-A-Za-z0-9_+]*)*$",
        max_length=64,
        description="IANA time zone the hours are in, e.g. America/New_York.",
    )

    @model_validator(mode="after")
    def _hours_ordered(self) -> SendWindow:
        if self.start_hour >= self.end_hour:
            raise ValueError("window.startHour must be before window.endHour")
        return self


class Schedule(KubeModel):
    """When the campaign runs."""

    start_at: datetime | None = Field(
        default=None, description="Do not send before this time (RFC 3339); unset: right away."
    )
    window: SendWindow | None = Field(
        default=None, description="Allowed days and hours; unset: any time."
    )


class Throttle(KubeModel):
    """Rate limits of the campaign (on top of server, warm-up and tier limits)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.perHour) || !has(self.perDay) || self.perHour <= self.perDay",
                "throttle.perHour cannot exceed throttle.perDay",
                field_path=".perHour",
            )
        )
    )

    per_hour: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Messages per hour; unset: no hourly cap."
    )
    per_day: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Messages per day; unset: no daily cap."
    )
    per_mailbox_per_day: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description="Messages per day from one sending mailbox (from address).",
    )

    @model_validator(mode="after")
    def _hour_within_day(self) -> Throttle:
        if self.per_hour is not None and self.per_day is not None and self.per_hour > self.per_day:
            raise ValueError("throttle.perHour cannot exceed throttle.perDay")
        return self


class StopRules(KubeModel):
    """Stop sending when recipients react badly."""

    max_bounce_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Stop when hard bounces exceed this fraction of sent messages (0.05 = 5%).",
    )
    max_complaint_rate: float = Field(
        default=0.001,
        ge=0,
        le=1,
        description="Stop when complaints exceed this fraction of sent messages (0.001 = 0.1%).",
    )
    window: Duration = Field(default="24h", description="Period over which the rates are computed.")
    min_sample: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="Messages that must have been sent in the window before a rule applies.",
    )


class Unsubscribe(KubeModel):
    """How recipients opt out (List-Unsubscribe, RFC 8058 one-click)."""

    url: str | None = Field(
        default=None,
        pattern=HTTPS_URL_PATTERN,
        max_length=2048,
        description=(
            "HTTPS base URL of the one-click unsubscribe endpoint; a per-recipient token is "
            "appended. Unset: the platform's own endpoint."
        ),
    )
    mailto: EmailAddress | None = Field(
        default=None,
        description="Address for mailto: unsubscribe requests; unset: the platform's own.",
    )


class MailboxSelection(KubeModel):
    """Mailboxes of one SendingDomain to send from."""

    sending_domain_ref: LocalObjectReference = Field(
        description="SendingDomain whose spec.mailboxes are used (its servers carry them)."
    )
    local_parts: list[LocalPart] = Field(
        default_factory=list,
        max_length=100,
        description="Which of its mailboxes (localPart); empty: all of them.",
        json_schema_extra=LIST_SET,
    )


class Rotation(KubeModel):
    """Send from several mailboxes, across domains and servers, instead of spec.from alone."""

    mailboxes: list[MailboxSelection] = Field(
        min_length=1,
        max_length=20,
        description=(
            "Mailboxes to rotate across, each within its own daily cap and warm-up; a "
            "mailbox's servers are its domain's smtpServerRefs, weighted by their "
            "spec.weight, and a failing server is skipped."
        ),
    )
    sticky: bool = Field(
        default=True,
        description=(
            "Keep each contact on the mailbox (and domain) of its first message for the "
            "whole conversation: follow-ups and replies come from the same address."
        ),
    )


class CampaignSpec(KubeModel):
    """Desired state of a Campaign."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.text) || has(self.html)",
                "set spec.text, spec.html or both",
                reason="FieldValueRequired",
            )
        )
    )

    sending_domain_ref: LocalObjectReference = Field(
        description="SendingDomain the messages are sent from. Immutable.",
        json_schema_extra=immutable("sendingDomainRef"),
    )
    smtp_server_refs: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=20,
        description="SmtpServers to send through; empty: the sending domain's servers.",
        json_schema_extra=list_map("name"),
    )
    from_: MailAddress = Field(
        alias="from",
        description="From mailbox; its domain must be the sending domain.",
    )
    rotation: Rotation | None = Field(
        default=None,
        description=(
            "Mailboxes to rotate across (spec.from is then only the default display name); "
            "unset: every message is from spec.from."
        ),
    )
    reply_to: MailAddress | None = Field(default=None, description="Reply-To mailbox.")
    subject: SingleLine = Field(
        min_length=1, max_length=998, description="Subject template (single line)."
    )
    text: str | None = Field(
        default=None,
        min_length=1,
        max_length=262144,
        description="Plain-text body template.",
    )
    html: str | None = Field(
        default=None,
        min_length=1,
        max_length=524288,
        description="HTML body template.",
    )
    audience: Audience = Field(description="Who receives the campaign.")
    schedule: Schedule = Field(default_factory=Schedule, description="When the campaign runs.")
    throttle: Throttle = Field(default_factory=Throttle, description="Rate limits.")
    warmup: WarmupSettings | None = Field(
        default=None,
        description=(
            "Ramp the campaign's own daily volume; unset: only the servers' warm-up applies."
        ),
    )
    stop_rules: StopRules = Field(
        default_factory=StopRules, description="Bounce and complaint thresholds."
    )
    paused: bool = Field(default=False, description="Stop handing out messages until unset.")
    unsubscribe: Unsubscribe = Field(
        default_factory=Unsubscribe, description="Unsubscribe endpoints."
    )

    @model_validator(mode="after")
    def _has_body(self) -> CampaignSpec:
        if self.text is None and self.html is None:
            raise ValueError("set spec.text, spec.html or both")
        return self


class CampaignCounts(StatusModel):
    """Delivery counters (one per final or current state of a delivery)."""

    total: int = Field(default=0, ge=0, description="Deliveries planned (audience size).")
    queued: int = Field(default=0, ge=0, description="Waiting to be sent.")
    sent: int = Field(default=0, ge=0, description="Accepted by the receiving server.")
    deferred: int = Field(default=0, ge=0, description="Temporarily failed; will be retried.")
    bounced: int = Field(default=0, ge=0, description="Hard bounced (5xx).")
    failed: int = Field(default=0, ge=0, description="Given up after retries.")
    unsubscribed: int = Field(default=0, ge=0, description="Recipients who unsubscribed.")
    complained: int = Field(default=0, ge=0, description="Recipients who reported spam.")


class CampaignMailboxStatus(StatusModel):
    """One mailbox of spec.rotation as this campaign uses it today."""

    address: str = Field(max_length=320, description="The mailbox's address.")
    daily_limit: int = Field(
        ge=0, description="Messages it may send today across campaigns (warm-up applied)."
    )
    warmup_day: int | None = Field(
        default=None,
        ge=0,
        description="Day of its warm-up (0 = first, counted from its first message); unset: none.",
    )
    sent: int = Field(default=0, ge=0, description="Messages of this campaign sent from it.")
    queued: int = Field(
        default=0, ge=0, description="Deliveries of this campaign assigned to it and not final yet."
    )


class CampaignStatus(ConditionedStatus):
    """Observed state of a Campaign."""

    phase: CampaignPhase | None = Field(default=None, description="Coarse lifecycle phase.")
    counts: CampaignCounts | None = Field(default=None, description="Delivery counters.")
    progress: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Percent of deliveries in a final state (sent, bounced, failed, skipped).",
    )
    bounce_rate: float | None = Field(
        default=None, ge=0, le=1, description="Hard bounce rate over the stop-rule window."
    )
    complaint_rate: float | None = Field(
        default=None, ge=0, le=1, description="Complaint rate over the stop-rule window."
    )
    started_at: datetime | None = Field(default=None, description="When sending started.")
    finished_at: datetime | None = Field(default=None, description="When sending finished.")
    mailboxes: list[CampaignMailboxStatus] = Field(
        default_factory=list,
        max_length=2000,
        description="Per mailbox of spec.rotation: today's limit, warm-up day and counts.",
    )


class Campaign(Resource):
    """One message sent to an audience from a sending domain."""

    resource_info = ResourceInfo(
        kind="Campaign",
        plural="campaigns",
        singular="campaign",
        scope="Namespaced",
        short_names=("camp",),
        printer_columns=(
            PrinterColumn(
                "Domain",
                "string",
                ".spec.sendingDomainRef.name",
                "SendingDomain used.",
                priority=1,
            ),
            PrinterColumn("Phase", "string", ".status.phase", "Lifecycle phase."),
            PrinterColumn("Progress", "integer", ".status.progress", "Percent of deliveries done."),
            PrinterColumn("Sent", "integer", ".status.counts.sent", "Messages sent."),
            PrinterColumn(
                "Bounced", "integer", ".status.counts.bounced", "Hard bounces.", priority=1
            ),
            READY_COLUMN,
            AGE_COLUMN,
            MESSAGE_COLUMN,
        ),
        spec_model=CampaignSpec,
        status_model=CampaignStatus,
    )

    api_version: Literal["penguinmails.io/v1alpha1"] = Field(
        default=GROUP_VERSION, description="API version (penguinmails.io/v1alpha1)."
    )
    kind: Literal["Campaign"] = Field(default="Campaign", description="Kind.")
    spec: CampaignSpec = Field(description="Desired state.")
    status: CampaignStatus | None = Field(default=None, description="Observed state.")
