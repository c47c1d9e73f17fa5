"""What the resource routes share: the tenant's custom resources read and written in its
namespace, the spec's version as the ETag, `If-Match` as a precondition.

Why not `resourceVersion` as the ETag: it changes on every write, the operator's status
updates too (a sending campaign's progress, every few seconds), so an edit based on the
current spec would be refused for a change the client could not have lost. The ETag is the
object's uid and `generation` (which the API server bumps on spec changes only); the write
itself still names the `resourceVersion` it read, so a change between that read and the
write is never overwritten: it is read again and, if the spec is still the one the ETag
names, written again.

The API writes the same objects `kubectl apply` would (apiVersion, kind, metadata.name, spec)
into the tenant's namespace and reads their status; it decides nothing the operator decides.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Header, Path, Response
from kubernetes.client.exceptions import ApiException
from pydantic import Field

from penguinmails.api.v1alpha1 import GROUP_VERSION, KubeModel, Resource

from ..auth import TenantAccess
from ..errors import ApiError, ErrorResponse
from ..kube import kube_error
from ..models import ApiModel
from ..pagination import PageParams
from ..services import Services

__all__ = [
    "ERRORS",
    "NAME_PATTERN",
    "IfMatch",
    "ObjectMeta",
    "ObjectName",
    "as_written",
    "create",
    "delete",
    "etag",
    "expected_etag",
    "fetch",
    "list_page",
    "merge_patch",
    "meta",
    "set_etag",
]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 412, 429)
}

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

ObjectName = Annotated[
    str,
    Path(min_length=1, max_length=253, pattern=NAME_PATTERN, description="The object's name."),
]

IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=128,
        description="ETag of the version this change is based on; 412 if it has changed.",
    ),
]


class ObjectMeta(ApiModel):
    name: str = Field(description="The object's name in the tenant.")
    resource_version: str = Field(description="Changes on every write, status updates too.")
    generation: int | None = Field(
        default=None, description="Changes on every spec change (the ETag's version)."
    )
    created_at: datetime | None = Field(default=None, description="When it was created.")


def meta(obj: dict[str, Any]) -> ObjectMeta:
    metadata = obj.get("metadata") or {}
    return ObjectMeta(
        name=str(metadata.get("name", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        generation=metadata.get("generation"),
        created_at=metadata.get("creationTimestamp"),
    )


def etag(obj: dict[str, Any]) -> str | None:
    """The object's ETag without its quotes: its uid (a deleted and re-created object is
    another) and its spec's version (`generation`)."""
    metadata = obj.get("metadata") or {}
    uid, generation = metadata.get("uid"), metadata.get("generation")
    return f"{uid}.{generation}" if uid and generation is not None else None


def set_etag(response: Response, obj: dict[str, Any]) -> None:
    tag = etag(obj)
    if tag:
        response.headers["ETag"] = f'"{tag}"'


_ETAG = re.compile(r'^(W/)?"([^"]+)"$')

# How often a write is tried again after the object changed between its read and its write
# while its spec stayed the one the change was based on (the operator writing status).
WRITE_TRIES = 5


def expected_etag(if_match: str | None) -> str | None:
    """The ETag an If-Match header names, without its quotes (None for none or `*`)."""
    if if_match is None or if_match.strip() == "*":
        return None
    found = _ETAG.match(if_match.strip())
    if found is None:
        raise ApiError.invalid(
            'If-Match must be an ETag as returned by this API, e.g. "6f1c…-3".', "If-Match"
        )
    return found.group(2)


def check_etag(
    kind: type[Resource], name: str, current: dict[str, Any], expected: str | None
) -> None:
    """412 when If-Match named another version of the spec than the current one."""
    if expected is not None and etag(current) != expected:
        raise ApiError(
            412,
            "precondition_failed_error",
            "etag_mismatch",
            f"{_what(kind, name)} has changed since the ETag given in If-Match: fetch it again.",
            param="If-Match",
        )


def lost_race(error: ApiException) -> bool:
    """The API server refused a write that named a resourceVersion no longer current."""
    return error.status == 409 and b"AlreadyExists" not in (
        error.body if isinstance(error.body, bytes) else str(error.body or "").encode()
    )


def as_written(spec: KubeModel) -> dict[str, Any]:
    """The spec as the client wrote it (validated), without the defaults the model filled in:
    the API server applies the CRD's defaults, so the object equals what `kubectl apply` of
    the same spec makes."""
    return spec.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


def _what(kind: type[Resource], name: str) -> str:
    return f"{kind.resource_info.kind} {name!r}"


async def list_page(
    svc: Services, access: TenantAccess, kind: type[Resource], page: PageParams
) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return await svc.kube.list(
            access.tenant.namespace, kind.resource_info.plural, limit=page.limit, cont=page.cursor
        )
    except ApiException as error:
        if error.status in (400, 422) and page.cursor:
            raise ApiError.invalid("Not a cursor of this list.", "cursor") from error
        raise _error(error, f"{kind.resource_info.kind} list") from error


def _error(error: ApiException, what: str) -> ApiError:
    return kube_error(error, what)


async def fetch(
    svc: Services, access: TenantAccess, kind: type[Resource], name: str
) -> dict[str, Any]:
    try:
        return await svc.kube.get(access.tenant.namespace, kind.resource_info.plural, name)
    except ApiException as error:
        raise _error(error, _what(kind, name)) from error


async def create(
    svc: Services, access: TenantAccess, kind: type[Resource], name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "apiVersion": GROUP_VERSION,
        "kind": kind.resource_info.kind,
        "metadata": {"name": name, "namespace": access.tenant.namespace},
        "spec": spec,
    }
    try:
        return await svc.kube.create(access.tenant.namespace, kind.resource_info.plural, body)
    except ApiException as error:
        raise _error(error, _what(kind, name)) from error


async def merge_patch(
    svc: Services,
    access: TenantAccess,
    kind: type[Resource],
    name: str,
    spec_patch: dict[str, Any],
    *,
    based_on: str,
) -> dict[str, Any]:
    """Patch the spec only if the object is still at `based_on` (its resourceVersion); an
    ApiException 409 when it is not (`lost_race`), for the caller to read it again."""
    patch = {"metadata": {"resourceVersion": based_on}, "spec": spec_patch}
    return await svc.kube.merge_patch(
        access.tenant.namespace, kind.resource_info.plural, name, patch
    )


async def delete(
    svc: Services, access: TenantAccess, kind: type[Resource], name: str, if_match: str | None
) -> None:
    expected = expected_etag(if_match)
    for tries in range(1, WRITE_TRIES + 1):
        version = None
        if expected is not None:
            current = await fetch(svc, access, kind, name)
            check_etag(kind, name, current, expected)
            version = str((current.get("metadata") or {}).get("resourceVersion", "")) or None
        try:
            await svc.kube.delete(
                access.tenant.namespace, kind.resource_info.plural, name, resource_version=version
            )
            return
        except ApiException as error:
            if version is not None and lost_race(error) and tries < WRITE_TRIES:
                continue
            raise _error(error, _what(kind, name)) from error
