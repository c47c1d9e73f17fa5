"""The manual provider: nothing is published; status.records is the customer's to-do list.

Verification runs exactly as for the other providers, so a record the customer mistyped shows up
as not verified, with what the nameservers answered instead.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from penguinmails.operator.dns.base import Change, Existing


class ManualProvider:
    async def read(self, zone: str, names: Collection[str]) -> Existing:
        return {}

    async def apply(self, zone: str, changes: Sequence[Change]) -> None:
        return None
