"""Sending domains: create one, see the records to publish and their verification (from the
SendingDomain's status, as the operator observed them), delete it."""

from __future__ import annotations

from penguinmails.api.v1alpha1 import SendingDomain

from ..auth import Resource
from .resource_routes import ResourceRoutes, Summaries

routes = ResourceRoutes(
    SendingDomain,
    "sending-domains",
    scope=Resource.DOMAINS,
    noun="domain",
    summaries=Summaries(
        list="List domains",
        create="Create a sending domain",
        show="A sending domain, its records and their verification",
        delete="Delete a sending domain",
    ),
)
router = routes.router
