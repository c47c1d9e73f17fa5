"""SMTP servers: list, show (provisioning and probe results from the SmtpServer's status),
create, delete."""

from __future__ import annotations

from penguinmails.api.v1alpha1 import SmtpServer

from ..auth import Resource
from .resource_routes import ResourceRoutes, Summaries

routes = ResourceRoutes(
    SmtpServer,
    "smtp-servers",
    scope=Resource.SMTP_SERVERS,
    noun="server",
    summaries=Summaries(
        list="List SMTP servers",
        create="Create an SMTP server",
        show="An SMTP server and its state",
        delete="Delete an SMTP server",
    ),
)
router = routes.router
