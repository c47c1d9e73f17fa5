"""`Idempotency-Key` on POST: a retried request gets the first answer again instead of acting
twice (as in Stripe's API).

The first request with a key claims it in Redis (`SET NX`, 24 hours) with a fingerprint of the
request (method, path, query, body; for a streamed CSV upload, the body's length); its answer
(status, body, ETag, content type) is stored when it is sent. A request with the same key then:

- gets the stored answer, marked `Idempotent-Replayed: true`, when its fingerprint is the same;
- gets 400 `idempotency_key_reused` when the request differs (a key names one request);
- gets 409 `idempotency_in_progress` while the first is still being answered.

Keys are scoped to the caller (the API key, or the user), so two callers never share one. A
5xx answer is not stored: the key is released and the request may be retried. An answer marked
`Cache-Control: no-store` (it holds a secret shown once, such as a new API key) is never
stored either: its key stays used, and a repeat gets 409 `idempotency_key_used`. Sign-in and
refresh take no key (they are not authenticated requests).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request, Response

from .errors import ApiError

__all__ = ["HEADER", "Claim", "IdempotentReplay", "claim", "finish"]

HEADER = "Idempotency-Key"
TTL_SECONDS = 24 * 3600
_PREFIX = "pm:api:idem:"
_KEPT_HEADERS = ("content-type", "etag")
STREAMED_TYPES = frozenset({"text/csv"})
"""Bodies fingerprinted by their Content-Length: uploads (contact imports) that the handler
streams to disk with a size limit, which reading them here would defeat."""


class IdempotentReplay(Exception):  # noqa: N818 (a signal, not a failure)
    """Raised to answer with the stored response of an earlier identical request."""

    def __init__(self, response: Response) -> None:
        super().__init__("idempotent replay")
        self.response = response


@dataclass(frozen=True)
class Claim:
    name: str
    fingerprint: str


async def claim(redis: aioredis.Redis, request: Request, scope: str) -> Claim | None:
    """Claim the request's Idempotency-Key for `scope` (the caller), or replay / refuse."""
    key = request.headers.get(HEADER)
    if request.method != "POST" or key is None:
        return None
    if not 1 <= len(key) <= 255:
        raise ApiError.invalid(f"{HEADER} must be 1 to 255 characters.", HEADER)
    parts = [request.method, request.url.path, request.url.query]
    if request.headers.get("content-type", "").split(";")[0].strip() in STREAMED_TYPES:
        # An upload is streamed to its handler, never read whole here: its length stands in.
        body = request.headers.get("content-length", "").encode()
    else:
        body = await request.body()
    fingerprint = hashlib.sha256(b"\0".join([*(p.encode() for p in parts), body])).hexdigest()
    name = _PREFIX + scope + ":" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    pending = json.dumps({"state": "pending", "fingerprint": fingerprint})
    if await redis.set(name, pending, nx=True, ex=TTL_SECONDS):
        return Claim(name, fingerprint)
    raw = await redis.get(name)
    stored = json.loads(raw) if raw else {}
    if stored.get("fingerprint") != fingerprint:
        raise ApiError.invalid(
            f"This {HEADER} was used for a different request: use a new key for a new request.",
            HEADER,
            "idempotency_key_reused",
        )
    if stored.get("state") == "secret":
        raise ApiError(
            409,
            "conflict_error",
            "idempotency_key_used",
            f"The request with this {HEADER} succeeded and its answer held a secret shown "
            "only once: list the resource to find what it created.",
            param=HEADER,
        )
    if stored.get("state") != "done":
        raise ApiError(
            409,
            "conflict_error",
            "idempotency_in_progress",
            f"A request with this {HEADER} is still being answered: retry in a moment.",
            param=HEADER,
        )
    headers = dict(stored.get("headers", {}))
    headers["Idempotent-Replayed"] = "true"
    raise IdempotentReplay(
        Response(
            content=base64.b64decode(stored["body"]),
            status_code=int(stored["status"]),
            headers=headers,
        )
    )


async def finish(redis: aioredis.Redis, claimed: Claim, response: Response) -> Response:
    """Store the answer for replays (release the key after a 5xx); return it, still sendable."""
    if response.status_code >= 500:
        await redis.delete(claimed.name)
        return response
    if "no-store" in response.headers.get("cache-control", ""):
        secret = {"state": "secret", "fingerprint": claimed.fingerprint}
        await redis.set(claimed.name, json.dumps(secret), keepttl=True)
        return response
    chunks = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
    body = b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks)
    headers = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
    record = {
        "state": "done",
        "fingerprint": claimed.fingerprint,
        "status": response.status_code,
        "headers": headers,
        "body": base64.b64encode(body).decode("ascii"),
    }
    await redis.set(claimed.name, json.dumps(record), keepttl=True)
    return Response(
        content=body,
        status_code=response.status_code,
        headers=dict(response.headers),
        media_type=response.media_type,
    )
