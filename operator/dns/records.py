"""The records a SendingDomain needs, as pure functions of its spec, keys and servers.

Values are what a resolver hands back: TXT as the joined string without quotes (a long DKIM key
is one record of several <=255-byte strings, see `txt_strings`), MX as `<priority> <host>`.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from penguinmails.api.v1alpha1.common import parse_duration
from penguinmails.api.v1alpha1.sendingdomain import (
    DmarcAlignment,
    DmarcPolicy,
    DmarcSettings,
    SendingDomainSpec,
)
from penguinmails.common.dkim.keys import DkimKey

SPF_MAX_LOOKUPS = 10
SPF_MAX_VOID_LOOKUPS = 2
TXT_STRING_MAX = 255


@dataclass(frozen=True, order=True)
class Record:
    """One resource record: owner name (FQDN, lower case, no trailing dot), type, value."""

    name: str
    type: str
    value: str
    ttl: int = 300
    purpose: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        """Identity for comparisons: the TTL and purpose do not make a record different."""
        return (self.name, self.type, normalize_value(self.type, self.value))


@dataclass(frozen=True)
class SmtpServerInfo:
    """What the records need from an SmtpServer: its HELO hostname and public IP (if known)."""

    hostname: str
    ip_address: str | None


class SpfLimitError(ValueError):
    """The SPF record would exceed RFC 7208's DNS lookup limits."""


def normalize_value(rtype: str, value: str) -> str:
    """Canonical form for comparison: MX hosts lower case without the trailing dot."""
    if rtype == "MX":
        priority, _, host = value.strip().partition(" ")
        return f"{int(priority)} {host.strip().rstrip('.').lower()}"
    if rtype in ("CNAME", "A", "AAAA"):
        return value.strip().rstrip(".").lower()
    return value


def txt_strings(value: str) -> list[str]:
    """Split a TXT value into character-strings of at most 255 bytes (RFC 1035 3.3).

    All strings form ONE record; verifiers concatenate them (RFC 6376 3.6.2.2, RFC 7208 3.3).
    """
    data = value.encode()
    if not data:
        return [""]
    return [data[i : i + TXT_STRING_MAX].decode() for i in range(0, len(data), TXT_STRING_MAX)]


def txt_rdata_text(value: str) -> str:
    """Master-file text of a TXT value: `"part1" "part2"` (our values hold no quotes)."""
    return " ".join(f'"{part}"' for part in txt_strings(value))


def spf_value(ips: Iterable[str], includes: Sequence[str] = (), policy: str = "~all") -> str:
    """`v=spf1 ip4:... ip6:... include:... ~all`; IPs sorted, duplicates dropped."""
    addresses = sorted({ipaddress.ip_address(ip) for ip in ips}, key=lambda a: (a.version, a))
    terms = ["v=spf1"]
    terms += [f"ip{a.version}:{a}" for a in addresses]
    terms += [f"include:{name.rstrip('.').lower()}" for name in includes]
    terms.append(policy)
    return " ".join(terms)


def _lookup_target(term: str) -> tuple[bool, str | None]:
    """Whether an SPF term costs a DNS lookup, and the name to fetch for include/redirect."""
    bare = term.lstrip("+-~?").lower()
    if bare.startswith("include:"):
        return True, bare[len("include:") :]
    if bare.startswith("redirect="):
        return True, bare[len("redirect=") :]
    if bare in ("a", "mx", "ptr") or bare.startswith(("a:", "a/", "mx:", "mx/", "ptr:", "exists:")):
        return True, None
    return False, None


def spf_lookups(value: str, fetch: Callable[[str], str | None]) -> tuple[int, int]:
    """(DNS lookups, void lookups) needed to evaluate `value`, following include/redirect.

    `fetch(name)` returns the SPF record at name, or None when the name has none (a void lookup).
    Raises SpfLimitError naming the offending include once a limit is exceeded.
    """
    lookups = 0
    voids = 0
    seen: set[str] = set()

    def walk(record: str, via: str) -> None:
        nonlocal lookups, voids
        for term in record.split()[1:]:
            costs, target = _lookup_target(term)
            if not costs:
                continue
            lookups += 1
            if lookups > SPF_MAX_LOOKUPS:
                raise SpfLimitError(
                    f"SPF needs more than {SPF_MAX_LOOKUPS} DNS lookups (at {term} via {via}); "
                    "remove includes from spec.spf.includes"
                )
            if target is None or target in seen:
                continue
            seen.add(target)
            nested = fetch(target)
            if nested is None:
                voids += 1
                if voids > SPF_MAX_VOID_LOOKUPS:
                    raise SpfLimitError(
                        f"SPF has more than {SPF_MAX_VOID_LOOKUPS} void lookups ({target} has "
                        "no SPF record); fix or remove it in spec.spf.includes"
                    )
                continue
            walk(nested, target)

    walk(value, "the domain's record")
    return lookups, voids


def dmarc_value(
    policy: DmarcPolicy,
    *,
    subdomain_policy: DmarcPolicy | None = None,
    alignment: DmarcAlignment = DmarcAlignment.RELAXED,
    rua: Sequence[str] = (),
    ruf: Sequence[str] = (),
) -> str:
    """`v=DMARC1; p=...` with sp=, adkim=/aspf= (r or s), rua=/ruf= mailto: lists."""
    mode = "s" if alignment == DmarcAlignment.STRICT else "r"
    tags = [f"v=DMARC1; p={policy.value}"]
    if subdomain_policy is not None:
        tags.append(f"sp={subdomain_policy.value}")
    tags.append(f"adkim={mode}; aspf={mode}")
    if rua:
        tags.append("rua=" + ",".join(f"mailto:{a}" for a in rua))
    if ruf:
        tags.append("ruf=" + ",".join(f"mailto:{a}" for a in ruf))
    return "; ".join(tags)


def effective_dmarc_policy(
    settings: DmarcSettings, first_verified_at: datetime | None, now: datetime
) -> DmarcPolicy:
    """The policy to publish now: the strictest rollout step whose `after` has passed."""
    policy = settings.policy
    if first_verified_at is None:
        return policy
    elapsed = now - first_verified_at
    for step in sorted(settings.rollout or (), key=lambda s: parse_duration(s.after)):
        if elapsed >= parse_duration(step.after):
            policy = step.policy
    return policy


def mta_sts_value(mode: str, max_age_seconds: int, mx_hosts: Sequence[str]) -> str:
    """`v=STSv1; id=...`: the id changes whenever the policy it announces changes."""
    policy = f"{mode}|{max_age_seconds}|{','.join(sorted(mx_hosts))}"
    return f"v=STSv1; id={hashlib.sha256(policy.encode()).hexdigest()[:20]}"


def tls_rpt_value(rua: Sequence[str]) -> str:
    return "v=TLSRPTv1; rua=" + ",".join(f"mailto:{a}" for a in rua)


def dkim_records(domain: str, keys: Iterable[DkimKey], ttl: int) -> list[Record]:
    """One TXT per published key (every state: Pending, Active, Retiring, Revoked)."""
    return [
        Record(f"{key.selector}._domainkey.{domain}", "TXT", key.dns_value(), ttl, "dkim")
        for key in keys
    ]


def desired_records(
    spec: SendingDomainSpec,
    *,
    keys: Iterable[DkimKey],
    servers: Sequence[SmtpServerInfo],
    dmarc_policy: DmarcPolicy,
    ttl: int,
    tls_rpt_fallback: Sequence[str] = (),
) -> list[Record]:
    """Every record the domain needs, sorted; the caller checks the SPF limits before publishing."""
    domain = spec.domain
    ips = [s.ip_address for s in servers if s.ip_address]
    spf = spf_value(ips, spec.spf.includes, spec.spf.policy.value)
    records = [Record(domain, "TXT", spf, ttl, "spf")]
    records += dkim_records(domain, keys, ttl)
    dmarc = spec.dmarc
    records.append(
        Record(
            f"_dmarc.{domain}",
            "TXT",
            dmarc_value(
                dmarc_policy,
                subdomain_policy=dmarc.subdomain_policy,
                alignment=dmarc.alignment,
                rua=dmarc.rua,
                ruf=dmarc.ruf,
            ),
            ttl,
            "dmarc",
        )
    )
    mx_hosts = [(h.priority, h.host) for h in spec.mx.hosts] or [(10, s.hostname) for s in servers]
    if spec.mx.enabled:
        records += [Record(domain, "MX", f"{p} {h}", ttl, "mx") for p, h in mx_hosts]
    if spec.return_path.enabled:
        bounce = f"{spec.return_path.subdomain}.{domain}"
        records.append(Record(bounce, "TXT", spf_value(ips, (), "~all"), ttl, "returnPath"))
        records += [Record(bounce, "MX", f"{p} {h}", ttl, "returnPath") for p, h in mx_hosts]
    if spec.mta_sts.enabled:
        value = mta_sts_value(
            spec.mta_sts.mode.value, spec.mta_sts.max_age_seconds, [h for _, h in mx_hosts]
        )
        records.append(Record(f"_mta-sts.{domain}", "TXT", value, ttl, "mtaSts"))
    rua = list(spec.tls_rpt.rua) or list(tls_rpt_fallback)
    if spec.tls_rpt.enabled and rua:
        records.append(Record(f"_smtp._tls.{domain}", "TXT", tls_rpt_value(rua), ttl, "tlsRpt"))
    return sorted(set(records))
