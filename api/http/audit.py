"""The audit trail of the API: one entry for every successful write into a tenant, recorded in
one place (the app's middleware calls `record_write()`), not by each route.

What an entry says is read from the request as routed:

- actor: `user:<id>` or `api_key:<id>` (the `TenantAccess` the route's `tenant_access`
  dependency left on `request.state`);
- action: `<resource>.<verb>` from the route's path template and method, e.g.
  `POST /v1/tenants/{tenant}/sending-domains` → `sending_domain.create`,
  `POST .../campaigns/{name}/pause` → `campaign.pause`, `DELETE .../api-keys/{key_id}` →
  `api_key.delete`;
- target: `<resource>:<the path's id>`, or for a create the `id` (else `name`) of the answer;
- source address (the client's: behind `PM_API_TRUSTED_PROXIES`, from `X-Forwarded-For`),
  request id.

Routes whose library call already records its own entry (the GDPR and webhook functions of
`common/`) set `request.state.audited = True` so that nothing is written twice; a replayed
`Idempotency-Key` answer did nothing and records nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Request, Response
from starlette.routing import Route

from penguinmails.common.db import tenant_connection
from penguinmails.common.db.audit import Context, record

from .auth import TenantAccess
from .services import Services

__all__ = ["WRITE_METHODS", "action_and_target", "context_of", "record_write"]

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_VERBS = {"POST": "create", "PUT": "replace", "PATCH": "update", "DELETE": "delete"}
_TENANT = ["tenants", "{tenant}"]


def context_of(request: Request, access: TenantAccess) -> Context:
    """Who is acting (user or API key), from where, in which request."""
    who = access.caller
    actor = f"api_key:{who.api_key.id}" if who.api_key is not None else f"user:{who.user_id}"
    source = request.client.host if request.client is not None else None
    return Context(actor, source_address=source, request_id=request.state.request_id)


def _singular(segment: str) -> str:
    word = segment.replace("-", "_")
    return word[:-1] if word.endswith("s") else word


def action_and_target(
    method: str, template: str, path_params: dict[str, Any], answer: Any
) -> tuple[str, str | None] | None:
    """`(action, target)` for a write routed to `template`; None outside a tenant."""
    # The template is the route's own (FastAPI keeps routers nested: without the `/v1`).
    parts = [p for p in template.split("/") if p]
    at = next((i for i in range(len(parts) - 1) if parts[i : i + 2] == _TENANT), None)
    if at is None or at + 2 == len(parts):
        return None
    rest = parts[at + 2 :]
    resource = _singular(rest[0])
    ident: str | None = None
    if len(rest) > 1 and rest[1].startswith("{"):
        ident = str(path_params.get(rest[1].strip("{}"), "")) or None
    elif isinstance(answer, dict):
        found = answer.get("id", answer.get("name"))
        ident = str(found) if found is not None else None
    tail = [p for p in rest[1:] if not p.startswith("{")]
    verb = tail[-1].replace("-", "_") if tail else _VERBS[method]
    return f"{resource}.{verb}", f"{resource}:{ident}" if ident else None


async def _body(response: Response) -> tuple[Response, Any]:
    """The answer's JSON (for a create's name or id), and the answer, still sendable."""
    if response.headers.get("content-type", "").split(";")[0] != "application/json":
        return response, None
    iterator = getattr(response, "body_iterator", None)
    if iterator is None:
        raw = bytes(response.body)
    else:
        chunks = [chunk async for chunk in iterator]
        raw = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
        response = Response(
            content=raw,
            status_code=response.status_code,
            headers=dict(response.headers),
            media_type=response.media_type,
        )
    try:
        return response, json.loads(raw)
    except ValueError:
        return response, None


async def record_write(svc: Services, request: Request, response: Response) -> Response:
    """Record the write `request` made, if it was a successful one in a tenant."""
    access: TenantAccess | None = getattr(request.state, "tenant_access", None)
    if (
        access is None
        or request.method not in WRITE_METHODS
        or not 200 <= response.status_code < 300
        or getattr(request.state, "audited", False)
        or response.headers.get("Idempotent-Replayed") == "true"
    ):
        return response
    route = request.scope.get("route")
    if not isinstance(route, Route):
        return response
    response, answer = await _body(response)
    found = action_and_target(request.method, route.path, request.path_params, answer)
    if found is None:
        return response
    action, target = found
    # The write itself is done (a custom resource, or another transaction): a failure to record
    # it is logged under the request id, and the client still learns its write succeeded.
    try:
        async with tenant_connection(svc.pool, access.tenant.id) as conn:
            await record(conn, context_of(request, access), action, target=target)
    except Exception:
        log.exception("could not audit %s (request %s)", action, request.state.request_id)
    return response
