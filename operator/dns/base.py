"""The provider interface and the ownership rules every provider shares.

A provider does two things (as external-dns and cert-manager's webhook solvers do): `read` the
records at some names, and `apply` a batch of record-level changes. Deciding WHAT to change is
provider-independent and lives here (`plan`).

Ownership: next to every record we create we publish a marker TXT at `_pm-owner.<name>` holding
`heritage=penguinmails,owner=<namespace>/<name>,rr=<TYPE>:<hash of the value>`. A record is ours
only when a marker of our owner names its exact type and value; everything else at the same name
(a verification TXT at the apex, another team's MX) is foreign and never changed or deleted.

The one foreign record we cannot simply publish beside is SPF: two `v=spf1` records at one name
make every SPF check a permerror (RFC 7208 4.5), so `spf_conflicts` finds them before `plan` runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from penguinmails.operator.dns.records import Record, normalize_value

OWNER_LABEL = "_pm-owner"
READ_TYPES = ("TXT", "MX")

# (name, type) → {normalized value: rdata text exactly as the server holds it}
Existing = Mapping[tuple[str, str], Mapping[str, str]]


@dataclass(frozen=True)
class Change:
    action: Literal["add", "delete"]
    record: Record
    rdata: str | None = None
    """For deletes: the rdata text as the server holds it (exact match needed)."""


class DnsProvider(Protocol):
    async def read(self, zone: str, names: Collection[str]) -> Existing:
        """TXT and MX values at each name (absent names are simply missing from the result)."""
        ...

    async def apply(self, zone: str, changes: Sequence[Change]) -> None:
        """Apply all changes, as one batch where the protocol allows it."""
        ...


def owner_name(name: str) -> str:
    return f"{OWNER_LABEL}.{name}"


def value_hash(record: Record) -> str:
    return hashlib.sha256(normalize_value(record.type, record.value).encode()).hexdigest()[:16]


def marker(record: Record, owner: str) -> Record:
    """The ownership TXT for `record`."""
    return Record(
        owner_name(record.name),
        "TXT",
        f"heritage=penguinmails,owner={owner},rr={record.type}:{value_hash(record)}",
        record.ttl,
        "owner",
    )


def types_at(name: str) -> tuple[str, ...]:
    """The types `read` asks for at `name`: we publish MX only at host names (the domain, its
    return path), never at an underscore name (markers, `_dmarc`, `_mta-sts`, `_smtp._tls`) nor
    at a DKIM key's name, so asking those for MX would be a query answered with nothing on every
    pass (queries are most of a pass's work on the event loop)."""
    if name.startswith("_") or "._domainkey." in name:
        return ("TXT",)
    return READ_TYPES


def names_to_read(records: Iterable[Record], extra_names: Iterable[str] = ()) -> set[str]:
    """Every name whose records and ownership markers a plan needs."""
    names = {r.name for r in records} | set(extra_names)
    return names | {owner_name(n) for n in names}


def owned_records(existing: Existing, owner: str, names: Iterable[str]) -> list[Change]:
    """Deletes for every record at `names` that a marker of `owner` claims (and the markers)."""
    changes: list[Change] = []
    for name in names:
        markers = existing.get((owner_name(name), "TXT"), {})
        for rtype in READ_TYPES:
            for value, rdata in existing.get((name, rtype), {}).items():
                record = Record(name, rtype, value)
                mark = marker(record, owner)
                if mark.value in markers:
                    changes.append(Change("delete", record, rdata))
                    changes.append(Change("delete", mark, markers[mark.value]))
    return changes


def is_spf(value: str) -> bool:
    """RFC 7208 4.5: an SPF record's text is "v=spf1" (any case) ended by a space or the end."""
    version = value.split(" ", 1)[0]
    return version.lower() == "v=spf1"


@dataclass(frozen=True)
class SpfConflict:
    """A foreign SPF record at a name where we want to publish ours."""

    name: str
    existing: str
    ours: str


def spf_conflicts(desired: Iterable[Record], existing: Existing, owner: str) -> list[SpfConflict]:
    """Foreign SPF records at the names of our SPF records (the domain, the return path).

    Not foreign: a record a marker of `owner` claims (ours, maybe an older value we will replace),
    and a record whose value is exactly ours: it is the record we want, so `plan` adopts it by
    adding our marker (from then on a spec change updates it in place and deletion removes it).
    """
    conflicts: list[SpfConflict] = []
    for record in desired:
        if record.type != "TXT" or not is_spf(record.value):
            continue
        ours = normalize_value("TXT", record.value)
        markers = existing.get((owner_name(record.name), "TXT"), {})
        for value in sorted(existing.get((record.name, "TXT"), {})):
            if not is_spf(value) or value == ours:
                continue
            if marker(Record(record.name, "TXT", value), owner).value in markers:
                continue
            conflicts.append(SpfConflict(record.name, value, record.value))
    return conflicts


def spf_conflict_message(conflicts: Sequence[SpfConflict]) -> str:
    """What the condition says: the record found, the two ways out, and why we stopped."""
    parts = [
        f'TXT {c.name} already holds an SPF record PenguinMails does not own: "{c.existing}". '
        f'Fix: replace it with exactly "{c.ours}" (PenguinMails then manages it), or, if it '
        "authorises other senders, add their include: domains to spec.spf.includes and then "
        "delete it"
        for c in conflicts
    ]
    return (
        ". ".join(parts) + ". Two SPF records at one name make every SPF check fail (permerror, "
        "RFC 7208 4.5), so PenguinMails changes nothing in DNS until only one is left"
    )


def plan(
    desired: Sequence[Record], existing: Existing, owner: str, known_names: Iterable[str] = ()
) -> list[Change]:
    """Adds for what is missing, deletes for what we own and no longer want; foreign kept."""
    wanted = {r.key for r in desired}
    wanted_markers = {marker(r, owner).key for r in desired}
    changes: list[Change] = []
    for record in desired:
        current = existing.get((record.name, record.type), {})
        if normalize_value(record.type, record.value) not in current:
            changes.append(Change("add", record))
        mark = marker(record, owner)
        if mark.value not in existing.get((mark.name, "TXT"), {}):
            changes.append(Change("add", mark))
    names = {r.name for r in desired} | set(known_names)
    for change in owned_records(existing, owner, names):
        if change.record.key not in wanted and change.record.key not in wanted_markers:
            changes.append(change)
    # Markers of ours whose record is gone and no longer wanted: stale, remove them too.
    prefix = f"heritage=penguinmails,owner={owner},"
    claimed = {c.record.key for c in changes if c.action == "delete"}
    for name in names:
        for value, rdata in existing.get((owner_name(name), "TXT"), {}).items():
            stale = Record(owner_name(name), "TXT", value)
            if (
                value.startswith(prefix)
                and stale.key not in wanted_markers
                and stale.key not in claimed
            ):
                changes.append(Change("delete", stale, rdata))
    return changes
