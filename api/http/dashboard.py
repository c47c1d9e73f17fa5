"""The dashboard's static build (web/dist), served by the API at / beside /v1."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

__all__ = ["ACCEPT_INVITATION", "DashboardFiles", "mount_dashboard"]

ACCEPT_INVITATION = "/accept-invitation"
"""The page invitation e-mails link to (PM_API_INVITATION_URL, the token after `#token=`): the
dashboard's index.html, whose script shows the accept page at this path."""


class DashboardFiles(StaticFiles):
    """Static files that never answer for the API's namespace: a path under /v1 that no route
    serves stays the API's 404 (route_missing), whatever its method, as without a dashboard."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            raise HTTPException(status_code=404)
        if scope["type"] == "http" and scope["path"] == ACCEPT_INVITATION:
            scope = {**scope, "path": "/"}  # the pages' one index.html
        await super().__call__(scope, receive, send)


def mount_dashboard(app: FastAPI, directory: Path) -> None:
    """Mount last, so that /v1 and /healthz win; same origin as the API the pages call."""
    app.mount("/", DashboardFiles(directory=directory, html=True), name="dashboard")
