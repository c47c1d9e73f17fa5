"""The PowerDNS Authoritative HTTP API (`X-API-Key`, PATCH rrsets), through httpx.

PowerDNS replaces whole RRsets, while we own single records: each change re-reads the RRset and
writes it back with our records added or removed and every foreign record kept as it was.
Error messages never include response bodies or headers (the key travels in a header).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import httpx

from penguinmails.operator.dns.base import READ_TYPES, Change, Existing
from penguinmails.operator.dns.rfc2136 import rdata_text, rdata_value
from penguinmails.operator.errors import ReconcileError


class PowerDnsProvider:
    def __init__(
        self, api_url: str, api_key: str, server_id: str = "localhost", timeout: float = 5.0
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.server_id = server_id
        self._client = httpx.AsyncClient(
            base_url=f"{self.api_url}/api/v1/servers/{server_id}",
            headers={"X-API-Key": api_key},
            timeout=timeout,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, zone: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ReconcileError(
                "DNSServerUnreachable",
                f"no answer from the PowerDNS API at {self.api_url} ({type(error).__name__}); "
                "check dnsProvider.powerdns.apiUrl and that the server is up",
            ) from None
        if response.status_code in (401, 403):
            raise ReconcileError(
                "InvalidCredentials",
                f"the PowerDNS API at {self.api_url} rejected the API key (HTTP "
                f"{response.status_code}); fix the key in dnsProvider.credentialsSecretRef",
            )
        if response.status_code in (404, 422) and method == "GET":
            raise ReconcileError(
                "ZoneNotFound",
                f"PowerDNS server {self.server_id} has no zone {zone}; create it or fix spec.zone",
            )
        if response.status_code >= 400:
            raise ReconcileError(
                "DNSUpdateRefused",
                f"the PowerDNS API refused the change to zone {zone} (HTTP "
                f"{response.status_code}); check the zone and the server's log",
            )
        return response

    async def _rrsets(self, zone: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
        response = await self._request("GET", f"/zones/{zone}.", zone)
        result: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for rrset in response.json().get("rrsets", []):
            key = (str(rrset["name"]).rstrip(".").lower(), str(rrset["type"]))
            result[key] = list(rrset.get("records", []))
        return result

    async def read(self, zone: str, names: Collection[str]) -> Existing:
        rrsets = await self._rrsets(zone)
        wanted = set(names)
        existing: dict[tuple[str, str], dict[str, str]] = {}
        for (name, rtype), records in rrsets.items():
            if name not in wanted or rtype not in READ_TYPES:
                continue
            values = existing.setdefault((name, rtype), {})
            for record in records:
                content = str(record["content"])
                values[_value(rtype, content)] = content
        return existing

    async def apply(self, zone: str, changes: Sequence[Change]) -> None:
        rrsets = await self._rrsets(zone)
        touched: dict[tuple[str, str], list[dict[str, Any]]] = {}
        ttls: dict[tuple[str, str], int] = {}
        for change in changes:
            record = change.record
            key = (record.name, record.type)
            current = touched.setdefault(key, [dict(r) for r in rrsets.get(key, [])])
            ttls[key] = record.ttl
            value = _value(record.type, rdata_text(record.type, record.value))
            kept = [r for r in current if _value(record.type, str(r["content"])) != value]
            if change.action == "add":
                kept.append({"content": rdata_text(record.type, record.value), "disabled": False})
            touched[key] = kept
        patch = []
        for (name, rtype), records in touched.items():
            rrset: dict[str, Any] = {"name": f"{name}.", "type": rtype}
            if records:
                rrset.update(changetype="REPLACE", ttl=ttls[(name, rtype)], records=records)
            else:
                rrset["changetype"] = "DELETE"
            patch.append(rrset)
        if patch:
            await self._request("PATCH", f"/zones/{zone}.", zone, json={"rrsets": patch})


def _value(rtype: str, content: str) -> str:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), content)
    return rdata_value(rdata)
