"""Shared building blocks of the v1alpha1 resources.

Everything here is part of the public API of the resource models:

* ``KubeModel`` / ``StatusModel``: base classes (camelCase aliases, strict spec, lenient status);
* ``Condition`` and the helpers ``get_condition`` / ``set_condition``;
* reusable constrained string types (``Fqdn``, ``EmailAddress``, ``Duration``...), references to
  other objects and Secrets, warm-up settings;
* ``ResourceInfo``/``PrinterColumn``/``Resource``: what the CRD generator reads from each kind;
* ``cel()``, ``validations()``, ``list_map()``, ``LIST_SET``: how models declare
  ``x-kubernetes-*`` schema extensions that the generator copies into the CRDs verbatim.

Patterns use only syntax shared by Python's ``re``, pydantic's Rust regex engine and Go's RE2
(the API server), so the model and the CRD accept exactly the same strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

API_GROUP: Final = "penguinmails.io"
API_VERSION: Final = "v1alpha1"
GROUP_VERSION: Final = "penguinmails.io/v1alpha1"
CATEGORY: Final = "penguinmails"

JsonDict = dict[str, Any]
"""A JSON object, as used for ``json_schema_extra`` and schema fragments."""

# --------------------------------------------------------------------------------------------
# Patterns and constrained types
# --------------------------------------------------------------------------------------------

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""RFC 1123 label (lower case), as Kubernetes uses for namespace names."""

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""RFC 1123 subdomain (lower case), as Kubernetes uses for most object names."""

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
FQDN_PATTERN = rf"^({_LABEL}\.)+[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?$"
"""A fully qualified domain name in lower case, at least two labels, no trailing dot; the last
label starts with a letter (so an IPv4 address is not a domain)."""

DNS_NAME_PATTERN = r"^([a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
"""Like FQDN_PATTERN, but labels other than the last may contain and start with ``_`` (service
names such as ``_spf.example.com``)."""

HOST_PATTERN = (
    r"^([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*"
    r"|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*)$"
)
"""A host name (one or more labels, e.g. ``localhost`` or ``smtp.example.com``), an IPv4
address or an IPv6 address (without brackets)."""

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ELABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{_ATOM}(\.{_ATOM})*@({_ELABEL}\.)+[A-Za-z]([-A-Za-z0-9]{{0,61}}[A-Za-z0-9])?$"
"""An e-mail address (``local@domain.tld``): dot-atom local part, a domain with a TLD."""

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
"""A Go duration as Kubernetes writes them: ``90s``, ``10m``, ``1h30m``, ``2160h`` (no days)."""

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
"""A Kubernetes resource quantity in its common forms: ``500m``, ``2``, ``256Mi``, ``10Gi``."""

CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
"""Condition type, as in ``metav1.Condition``: ``Ready``, ``DNSVerified``, ``example.com/Foo``."""

REASON_PATTERN = r"^[A-Z][A-Za-z0-9]*$"
"""A condition or event reason: one CamelCase word such as ``ZoneNotFound``."""

SINGLE_LINE_PATTERN = r"^[^\r\n]*$"
"""No line breaks: keeps header values (subject, display names) safe from header injection."""

HTTPS_URL_PATTERN = r"^https://[^\s/?#]+([/?#][^\s]*)?$"
HTTP_URL_PATTERN = r"^https?://[^\s/?#]+([/?#][^\s]*)?$"

Fqdn = Annotated[str, Field(pattern=FQDN_PATTERN, min_length=4, max_length=253)]
DnsName = Annotated[str, Field(pattern=DNS_NAME_PATTERN, min_length=4, max_length=253)]
Host = Annotated[str, Field(pattern=HOST_PATTERN, min_length=1, max_length=253)]
EmailAddress = Annotated[str, Field(pattern=EMAIL_PATTERN, min_length=6, max_length=254)]
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, min_length=2, max_length=32)]
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, min_length=1, max_length=32)]
ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
SecretKey = Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", min_length=1, max_length=253)]
SingleLine = Annotated[str, Field(pattern=SINGLE_LINE_PATTERN)]
Name253 = Annotated[str, Field(max_length=253)]
"""A host or zone name as reported in status (bounded, not pattern-checked)."""

# --------------------------------------------------------------------------------------------
# Schema extensions declared on models and copied by the CRD generator
# --------------------------------------------------------------------------------------------


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: str | None = None,
) -> JsonDict:
    """One ``x-kubernetes-validations`` entry (a CEL rule and the message shown when it fails).

    ``field_path`` is relative to the object the rule is declared on (e.g. ``.hostwinds``);
    ``reason`` is one of FieldValueInvalid (default), FieldValueForbidden, FieldValueRequired,
    FieldValueDuplicate.
    """
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def validations(*rules: JsonDict) -> JsonDict:
    """``json_schema_extra`` declaring CEL rules on a model or a field."""
    return {"x-kubernetes-validations": list(rules)}


def list_map(*keys: str, extra: JsonDict | None = None) -> JsonDict:
    """``json_schema_extra`` for a list of objects merged by key under server-side apply
    (keys must be required fields of the item); duplicates are rejected by the API server."""
    result: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}
    if extra:
        result.update(extra)
    return result


LIST_SET: JsonDict = {"x-kubernetes-list-type": "set"}
"""``json_schema_extra`` for a list of scalars without duplicates."""

IMMUTABLE_MESSAGE = "{field} is immutable: delete and re-create the object to change it"


def immutable(field_name: str) -> JsonDict:
    """``json_schema_extra`` making a field immutable once set (a CEL transition rule)."""
    return validations(cel("self == oldSelf", IMMUTABLE_MESSAGE.format(field=field_name)))


# --------------------------------------------------------------------------------------------
# Base models
# --------------------------------------------------------------------------------------------


class KubeModel(BaseModel):
    """Base of every spec part: camelCase on the wire, snake_case in Python, unknown fields are
    errors (so a typo in a customer API request is reported, not silently dropped)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )

    def to_k8s(self) -> dict[str, Any]:
        """The JSON-ready dict as stored in Kubernetes: camelCase keys, enums and datetimes as
        strings, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(KubeModel):
    """Base of status parts: unknown fields are ignored, so an older operator can still read a
    status written by a newer one."""

    model_config = ConfigDict(extra="ignore")


# --------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    """Status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One aspect of the object's current state (the shape of metav1.Condition)."""

    type: str = Field(
        pattern=CONDITION_TYPE_PATTERN,
        max_length=316,
        description="Type of condition in CamelCase, e.g. Ready or DNSVerified.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str = Field(
        pattern=REASON_PATTERN,
        min_length=1,
        max_length=1024,
        description="Programmatic identifier of the last transition's cause, one CamelCase word.",
    )
    message: str = Field(
        default="",
        max_length=32768,
        description="Human-readable details about the last transition; may be empty.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another (RFC 3339).",
    )
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation of the object the condition was computed from.",
    )


CONDITIONS_FIELD_DESCRIPTION = (
    "Latest observations of the object's state. Ready is always present once the operator has "
    "seen the object (Unknown or False until the object is fully reconciled)."
)


class ConditionedStatus(StatusModel):
    """Status fields every kind has."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="metadata.generation that the operator last reconciled.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description=CONDITIONS_FIELD_DESCRIPTION,
        json_schema_extra=list_map("type"),
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if present."""
        return get_condition(self.conditions, type_)

    def is_ready(self) -> bool:
        """Whether the Ready condition is True."""
        ready = self.condition("Ready")
        return ready is not None and ready.status == ConditionStatus.TRUE


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of this type in ``conditions``, if any."""
    for cond in conditions:
        if cond.type == type_:
            return cond
    return None


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[Condition]:
    """A new list with the condition of ``type_`` set (the order of the others is kept).

    ``lastTransitionTime`` changes only when the status changes, as in
    ``meta.SetStatusCondition``; ``now`` defaults to the current UTC time, to the second.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    state: ConditionStatus = status
    stamp = (now or datetime.now(UTC)).replace(microsecond=0)

    def updated(transition: datetime) -> Condition:
        return Condition(
            type=type_,
            status=state,
            reason=reason,
            message=message,
            last_transition_time=transition,
            observed_generation=observed_generation,
        )

    result = [
        cond
        if cond.type != type_
        else updated(cond.last_transition_time if cond.status == state else stamp)
        for cond in conditions
    ]
    if all(cond.type != type_ for cond in conditions):
        result.append(updated(stamp))
    return result


# --------------------------------------------------------------------------------------------
# References and shared settings
# --------------------------------------------------------------------------------------------


class ReceiverBlock(StatusModel):
    """Receivers keep refusing this server's (or this domain's) mail for policy, reputation
    or, for a domain, authentication (5.7.x): the senders skip it until `until`
    (common/db/blocks.py). Written by the operator from the blocks the senders and the bounce
    intake recorded; gone once the pause has passed."""

    reason: str = Field(max_length=300, description="What receivers did, in words.")
    until: datetime = Field(
        description="When senders use it again, unless receivers block it again meanwhile."
    )
    strikes: int = Field(ge=1, description="Blocks within the window that ended with the latest.")
    last_status: str | None = Field(
        default=None,
        max_length=16,
        description="The latest block's enhanced status code (5.7.1, 5.7.26...), if it had one.",
    )


class LocalObjectReference(KubeModel):
    """A reference to another object of the expected kind in the same namespace."""

    name: ObjectName = Field(description="Name of the referenced object.")


class SecretKeyRef(KubeModel):
    """One key of a Secret in the same namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: SecretKey = Field(description="Key within the Secret's data.")


class SecretRef(KubeModel):
    """A whole Secret in the same namespace (its expected keys are described where it is used)."""

    name: ObjectName = Field(description="Name of the Secret.")


class WarmupSettings(KubeModel):
    """Gradual ramp-up of daily volume for a new IP address, domain or campaign."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.targetPerDay) || self.targetPerDay >= self.initialPerDay",
                "warmup.targetPerDay must be at least warmup.initialPerDay",
                field_path=".targetPerDay",
            )
        )
    )

    enabled: bool = Field(default=True, description="Whether warm-up limits apply.")
    initial_per_day: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="Messages allowed on the first day of warm-up.",
    )
    daily_increase_percent: int = Field(
        default=20,
        ge=1,
        le=100,
        description="How much the daily allowance grows each day, in percent of the previous day.",
    )
    target_per_day: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description=(
            "Daily volume at which warm-up ends. Unset: warm-up ends when the allowance reaches "
            "the other limits that apply (server, campaign and tier limits)."
        ),
    )

    @model_validator(mode="after")
    def _target_not_below_start(self) -> WarmupSettings:
        if self.target_per_day is not None and self.target_per_day < self.initial_per_day:
            raise ValueError("warmup.targetPerDay must be at least warmup.initialPerDay")
        return self

    def allowance(self, day: int) -> int | None:
        """Messages allowed on warm-up day ``day`` (0 = first day); None once warm-up is over
        or disabled."""
        if not self.enabled:
            return None
        allowed = self.initial_per_day * (1 + self.daily_increase_percent / 100) ** max(day, 0)
        if self.target_per_day is not None and allowed >= self.target_per_day:
            return None
        return int(allowed)


# --------------------------------------------------------------------------------------------
# Parsing helpers
# --------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": timedelta(microseconds=0.001),
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}


def parse_duration(value: str) -> timedelta:
    """Parse a Go-style duration (``10m``, ``1h30m``, ``2160h``) as used in the specs."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 90s, 10m, 1h30m, 2160h")
    total = timedelta()
    for number, unit in _DURATION_PART.findall(value):
        total += _DURATION_UNITS[unit] * float(number)
    return total


_QUANTITY_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str) -> Decimal:
    """Parse a Kubernetes quantity (``500m``, ``2``, ``256Mi``) into a plain number."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?", value)
    if match is None:
        raise ValueError(f"invalid quantity {value!r}: expected e.g. 500m, 2, 256Mi, 10Gi")
    return Decimal(match.group(1)) * _QUANTITY_SUFFIXES[match.group(2) or ""]


# --------------------------------------------------------------------------------------------
# What the CRD generator reads from each kind
# --------------------------------------------------------------------------------------------

READY_JSON_PATH = '.status.conditions[?(@.type=="Ready")].status'


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (what ``kubectl get`` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0
    format: str | None = None


READY_COLUMN = PrinterColumn(
    "Ready", "string", READY_JSON_PATH, "Status of the Ready condition (True, False or Unknown)."
)
MESSAGE_COLUMN = PrinterColumn(
    "Message",
    "string",
    '.status.conditions[?(@.type=="Ready")].message',
    "Message of the Ready condition.",
    priority=1,
)
AGE_COLUMN = PrinterColumn(
    "Age", "date", ".metadata.creationTimestamp", "Time since the object was created."
)


@dataclass(frozen=True)
class ResourceInfo:
    """Class-level metadata of a kind: everything the CRD needs beyond the schema."""

    kind: str
    plural: str
    singular: str
    scope: Literal["Cluster", "Namespaced"]
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    spec_model: type[KubeModel]
    status_model: type[StatusModel]
    categories: tuple[str, ...] = (CATEGORY,)
    validations: tuple[JsonDict, ...] = ()
    """CEL rules at the root of the object (may use ``self.metadata.name``)."""

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{API_GROUP}"

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


class Resource(KubeModel):
    """Base of the top-level model of a kind (apiVersion, kind, metadata, spec, status).

    Subclasses set ``resource_info`` and declare ``api_version``, ``kind``, ``spec`` and
    ``status``. ``metadata`` is kept as the plain dict the API server returned.
    """

    model_config = ConfigDict(extra="ignore")

    resource_info: ClassVar[ResourceInfo]

    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Standard object metadata (name, namespace, labels, generation...).",
    )

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return None if ns is None else str(ns)

    @property
    def generation(self) -> int | None:
        gen = self.metadata.get("generation")
        return None if gen is None else int(gen)
