"""RFC 2136 dynamic updates signed with TSIG (BIND, Knot, PowerDNS, ...), through dnspython.

Reads are direct, non-recursive queries to the primary (TXT and MX at each name, TXT only at
marker names); a domain's changes (records, ownership markers, deletes) go as one UPDATE message
over TCP, so the server applies them atomically and bumps the zone's serial once. The TSIG
secret is only ever held in the keyring, never put in a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

from penguinmails.operator.dns import in_flight
from penguinmails.operator.dns.base import Change, Existing, types_at
from penguinmails.operator.dns.records import normalize_value, txt_rdata_text
from penguinmails.operator.errors import ReconcileError

BATCH = 200
_ALGORITHMS = {
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
}


def rdata_value(rdata: object) -> str:
    """The comparable value of a TXT or MX rdata."""
    if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return b"".join(rdata.strings).decode(errors="replace")
    return normalize_value("MX", str(rdata))


def rdata_text(rtype: str, value: str) -> str:
    if rtype == "TXT":
        return txt_rdata_text(value)
    if rtype == "MX":
        priority, _, host = normalize_value("MX", value).partition(" ")
        return f"{priority} {host}."
    return value


class Rfc2136Provider:
    def __init__(
        self,
        server: str,
        port: int,
        key_name: str,
        secret: str,
        algorithm: str = "hmac-sha256",
        timeout: float = 5.0,
    ) -> None:
        self.server = server
        self.port = port
        self.timeout = timeout
        try:
            key = dns.tsig.Key(key_name, secret, _ALGORITHMS[algorithm])
        except Exception:
            raise ReconcileError(
                "InvalidCredentials",
                "the TSIG secret in dnsProvider.credentialsSecretRef is not valid base64; "
                "put the key's base64 secret there",
            ) from None
        self._keyring = {key.name: key}
        self._key_name = key.name
        self._algorithm = _ALGORITHMS[algorithm]

    async def _query(self, name: str, rtype: str) -> dns.message.Message:
        query = dns.message.make_query(name + ".", rtype)
        query.flags &= ~dns.flags.RD
        try:
            async with in_flight.slot(self.server):
                try:
                    response = await dns.asyncquery.udp(
                        query, self.server, port=self.port, timeout=self.timeout / 2
                    )
                except dns.exception.Timeout:
                    # A lost datagram under load: ask again over TCP before calling it
                    # unreachable.
                    response = await dns.asyncquery.tcp(
                        query, self.server, port=self.port, timeout=self.timeout
                    )
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(
                        query, self.server, port=self.port, timeout=self.timeout
                    )
        except (OSError, dns.exception.Timeout) as error:
            raise _unreachable(self.server, self.port, error) from None
        return response

    async def read(self, zone: str, names: Collection[str]) -> Existing:
        pairs = [(n, t) for n in sorted(names) for t in types_at(n)]
        responses = await asyncio.gather(*(self._query(n, t) for n, t in pairs))
        existing: dict[tuple[str, str], dict[str, str]] = {}
        for (name, rtype), response in zip(pairs, responses, strict=True):
            if response.rcode() == dns.rcode.REFUSED:
                raise ReconcileError(
                    "ZoneNotFound",
                    f"{self.server}:{self.port} refused queries for {name}: it does not serve "
                    f"zone {zone}; fix spec.zone or dnsProvider.rfc2136.server",
                )
            for rrset in response.answer:
                if rrset.rdtype != dns.rdatatype.from_text(rtype):
                    continue
                values = existing.setdefault((name, rtype), {})
                for rdata in rrset:
                    values[rdata_value(rdata)] = rdata.to_text()
        return existing

    async def apply(self, zone: str, changes: Sequence[Change]) -> None:
        for update in self.updates(zone, changes):
            await self._send(update, zone)

    def updates(self, zone: str, changes: Sequence[Change]) -> list[dns.update.UpdateMessage]:
        """The signed UPDATE messages for `changes`: one for a domain's whole plan (its records,
        their markers and the deletes together, applied by the server atomically); only a
        plan of more than BATCH changes, far beyond one domain's, is split."""
        origin = dns.name.from_text(zone + ".")
        messages = []
        for start in range(0, len(changes), BATCH):
            update = dns.update.UpdateMessage(
                origin,
                keyring=self._keyring,
                keyname=self._key_name,
                keyalgorithm=self._algorithm,
            )
            for change in changes[start : start + BATCH]:
                record = change.record
                name = dns.name.from_text(record.name + ".").relativize(origin)
                if change.action == "add":
                    update.add(name, record.ttl, record.type, rdata_text(record.type, record.value))
                else:
                    text = change.rdata or rdata_text(record.type, record.value)
                    update.delete(name, record.type, text)
            messages.append(update)
        return messages

    async def _send(self, update: dns.update.UpdateMessage, zone: str) -> None:
        where = f"{self.server}:{self.port}"
        try:
            response = await dns.asyncquery.tcp(
                update, self.server, port=self.port, timeout=self.timeout
            )
        except dns.tsig.PeerError as error:
            raise ReconcileError(
                "TSIGRejected",
                f"{where} rejected our TSIG signature ({type(error).__name__}): check "
                "dnsProvider.rfc2136.tsigKeyName, tsigAlgorithm and the secret in "
                "dnsProvider.credentialsSecretRef",
            ) from None
        except (OSError, dns.exception.Timeout) as error:
            raise _unreachable(self.server, self.port, error) from None
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        if rcode == dns.rcode.NOTAUTH:
            raise ReconcileError(
                "TSIGRejected",
                f"{where} answered NOTAUTH for zone {zone}: the TSIG key is not allowed to "
                "update it (wrong key name or secret, or no update ACL for this key); check "
                "dnsProvider.rfc2136 and dnsProvider.credentialsSecretRef",
            )
        if rcode == dns.rcode.NOTZONE:
            raise ReconcileError(
                "ZoneNotFound",
                f"{where} is not authoritative for zone {zone}; fix spec.zone",
            )
        # The signature was accepted (that would be NOTAUTH), so the server's own policy or
        # limits refused this change; it does not say which, so name both and its log.
        raise ReconcileError(
            "DNSUpdateRefused",
            f"{where} refused the update to zone {zone} with {dns.rcode.to_text(rcode)}: its "
            f"update policy does not allow this change for TSIG key "
            f"{self._key_name.to_text(omit_final_dot=True)} "
            "or a server limit was hit (e.g. the zone's maximum size); the server's log names "
            "the cause: allow the update or raise the limit for this zone there",
        )


def _unreachable(server: str, port: int, error: BaseException) -> ReconcileError:
    return ReconcileError(
        "DNSServerUnreachable",
        f"no answer from {server}:{port} ({type(error).__name__}); check "
        "dnsProvider.rfc2136.server and port, and that the server is up",
    )
