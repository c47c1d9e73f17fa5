"""The Hostwinds provider: a VPS ordered through the cloud API, found again by its unique name."""

from __future__ import annotations

from penguinmails.api.v1alpha1.smtpserver import HostwindsProvider as HostwindsSpec
from penguinmails.operator.errors import ReconcileError
from penguinmails.operator.providers.base import External, ServerRef
from penguinmails.operator.providers.hostwinds_api import (
    HostwindsClient,
    HostwindsError,
    HostwindsUnavailableError,
    Instance,
)

FIELD = "spec.provider.hostwinds"

# What an API refusal is most likely about, and the field the user should fix.
_HINTS: tuple[tuple[str, str, str], ...] = (
    ("api key", "InvalidAPIKey", f"check the key in {FIELD}.apiKeySecretRef and its IP allow-list"),
    ("location", "UnknownLocation", f"set {FIELD}.locationId to a Hostwinds location id"),
    ("rid", "UnknownPlan", f"set {FIELD}.planId to a Hostwinds product id"),
    ("product", "UnknownPlan", f"set {FIELD}.planId to a Hostwinds product id"),
    ("template", "UnknownTemplate", f"set {FIELD}.template to a Hostwinds OS image"),
    ("firewall", "UnknownFirewallProfile", "create the profile or set PM_HOSTWINDS_FIREWALL"),
)


def explain(error: HostwindsError) -> ReconcileError:
    """A Hostwinds failure as a condition: reason, and a message naming the field to fix."""
    if isinstance(error, HostwindsUnavailableError):
        return ReconcileError("HostwindsUnavailable", f"{error}; retrying", transient=True)
    lowered = error.detail.lower()
    for needle, reason, fix in _HINTS:
        if needle in lowered:
            return ReconcileError(reason, f"{error}: {fix}", transient=False)
    # An unexplained refusal may be a create that took effect anyway: the next pass looks the
    # server up by name before anything else, so retrying later is safe.
    return ReconcileError("HostwindsRejected", f"{error}; retrying", transient=True)


def _external(instance: Instance) -> External:
    return External(
        provider_id=instance.serviceid,
        ready=instance.ready,
        state=instance.status or "unknown",
        ip_address=instance.main_ip,
        reverse_dns=instance.rdns,
    )


class HostwindsVps:
    """Provider contract over one API key (one client: shared throttle and circuit)."""

    def __init__(
        self,
        client: HostwindsClient,
        spec: HostwindsSpec,
        *,
        ssh_public_key: str,
        firewall_profile: str,
        create_settle_seconds: float,
    ) -> None:
        # add_instance answers before the server is listed, and the listing can lag: until it
        # has been watched this long, an unlisted order may still appear.
        self.create_settle_seconds = create_settle_seconds
        self._client = client
        self._spec = spec
        self._ssh_public_key = ssh_public_key
        self._firewall = firewall_profile

    async def observe(self, ref: ServerRef, provider_id: str | None) -> External | None:
        try:
            if provider_id:
                instance = await self._client.get_instance(provider_id)
                if instance is not None and not instance.gone:
                    return _external(instance)
            found = await self._client.find_by_name(ref.external_name)
        except HostwindsError as error:
            raise explain(error) from error
        if not found:
            return None
        if len(found) > 1:
            # Only an outside actor can cause this (we never create while one exists); keep the
            # oldest and say so rather than guess which one mail is using.
            found.sort(key=lambda i: int(i.serviceid) if i.serviceid.isdigit() else 0)
        return _external(found[0])

    async def create(self, ref: ServerRef) -> None:
        try:
            await self._client.add_instance(
                template=self._spec.template,
                rid=self._spec.plan_id,
                location_id=self._spec.location_id,
                srvrname=ref.external_name,
                keys=[self._ssh_public_key],
            )
        except HostwindsError as error:
            raise explain(error) from error

    async def update(self, ref: ServerRef, current: External) -> External:
        if current.ip_address is None or current.reverse_dns == ref.hostname:
            return current
        try:
            await self._client.set_instance_firewall(current.provider_id, self._firewall)
            await self._client.set_rdns(current.provider_id, current.ip_address, ref.hostname)
        except HostwindsError as error:
            raise explain(error) from error
        return External(
            provider_id=current.provider_id,
            ready=current.ready,
            state=current.state,
            ip_address=current.ip_address,
            reverse_dns=ref.hostname,
        )

    async def delete(self, ref: ServerRef, provider_id: str | None) -> bool:
        try:
            targets = []
            if provider_id:
                instance = await self._client.get_instance(provider_id)
                if instance is not None and not instance.gone:
                    targets.append(instance)
            # Also anything carrying our name: a create interrupted before its id was recorded.
            targets += [
                i
                for i in await self._client.find_by_name(ref.external_name)
                if i.serviceid not in {t.serviceid for t in targets}
            ]
            for instance in targets:
                await self._client.terminate(instance.serviceid)
            remaining = await self._client.find_by_name(ref.external_name)
            if provider_id:
                again = await self._client.get_instance(provider_id)
                if again is not None and not again.gone:
                    remaining.append(again)
        except HostwindsError as error:
            raise explain(error) from error
        return not remaining
