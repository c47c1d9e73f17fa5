"""The route factory of the tenant's custom-resource kinds: list, create, show, edit (a JSON
merge patch of the spec, for kinds that allow it) and delete under
`/tenants/{tenant}/<plural>`, built from the kind's model, its path plural and its scope.

Every kind gets the same conventions from here (custom.py: the spec's version as the ETag,
If-Match as a precondition answered with 412, the API server's conflicts as 409, cursor
pagination); the audit entry of each write is recorded by the app's middleware from the route's
path (audit.py), and the scope checked is the kind's (`tenant_access`). A kind's module declares
only what is its own (its summaries; campaigns add pause and resume through `change()`).

No `from __future__ import annotations` here: FastAPI reads each handler's parameters from its
annotations, and these name the kind's models and dependencies, which exist only once the
factory runs (string annotations would be looked up in this module's globals and not found).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast, get_args

from fastapi import APIRouter, Depends, Response
from kubernetes.client.exceptions import ApiException
from pydantic import Field, ValidationError, create_model

from penguinmails.api.v1alpha1 import KubeModel, Resource

from ..auth import Access, TenantAccess, tenant_access
from ..auth import Resource as Scope
from ..errors import ApiError
from ..kube import kube_error
from ..models import ApiModel
from ..pagination import Page, PageParams, page_params
from ..services import Services, services
from . import custom
from .custom import ERRORS, IfMatch, ObjectMeta, ObjectName

__all__ = ["ResourceRoutes", "Summaries", "merge"]

_EDIT_DESCRIPTION = (
    "A JSON merge patch (RFC 7386) of the spec: the fields to change, null to unset "
    "one. The result must be a valid spec."
)


@dataclass(frozen=True)
class Summaries:
    """The operations' one-line summaries in the OpenAPI document."""

    list: str
    create: str
    show: str
    delete: str
    edit: str | None = None
    """None: the kind cannot be edited (no PATCH)."""


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of `target` by `patch`."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge(result.get(key), value)
    return result


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _typed(handler: _Handler, **annotations: Any) -> _Handler:
    """Give `handler` the kind's own body model: FastAPI documents and validates the body from
    the parameter's annotation, and that model is made per kind, at run time."""
    handler.__annotations__.update(annotations)
    return handler


class ResourceRoutes:
    """The routes of one kind, on `router` (tagged with the plural), and its bodies:
    `<Kind>Create` (name and spec), `<Kind>Out` (metadata, spec, status), `<Kind>Edit`."""

    def __init__(
        self,
        model: type[Resource],
        plural: str,
        *,
        scope: Scope,
        noun: str,
        summaries: Summaries,
    ) -> None:
        """`plural` is the path's (`sending-domains`); `noun` names the operations
        (`list_<noun>s`, `create_<noun>`...: their operationIds)."""
        self.model = model
        self.path = f"/tenants/{{tenant}}/{plural}"
        self.router = APIRouter(tags=[plural])
        kind = model.resource_info.kind
        self.spec_model: type[KubeModel] = model.model_fields["spec"].annotation  # type: ignore[assignment]
        status = model.model_fields["status"].annotation
        self.status_model: type[KubeModel] = next(
            a for a in get_args(status) if a is not type(None)
        )
        self.out_model: type[ObjectMeta] = create_model(
            f"{kind}Out",
            __base__=ObjectMeta,
            spec=(self.spec_model, ...),
            status=(self.status_model | None, None),
        )
        self.create_model: type[ApiModel] = create_model(
            f"{kind}Create",
            __base__=ApiModel,
            name=(
                str,
                Field(
                    min_length=1,
                    max_length=253,
                    pattern=custom.NAME_PATTERN,
                    description="Name of the object.",
                ),
            ),
            spec=(self.spec_model, ...),
        )
        self.edit_model: type[ApiModel] = create_model(
            f"{kind}Edit",
            __base__=ApiModel,
            spec=(dict[str, Any], Field(description=_EDIT_DESCRIPTION)),
        )
        self._add_routes(noun, summaries, scope)

    def out(self, obj: dict[str, Any]) -> ObjectMeta:
        """The answer's body for an object as the API server returned it."""
        status = obj.get("status")
        return self.out_model.model_validate(
            {
                **custom.meta(obj).model_dump(),
                "spec": self.spec_model.model_validate(obj.get("spec") or {}),
                "status": self.status_model.model_validate(status) if status else None,
            }
        )

    def answer(self, response: Response, obj: dict[str, Any]) -> ObjectMeta:
        """The answer for one object, with its ETag (custom.etag)."""
        custom.set_etag(response, obj)
        return self.out(obj)

    async def change(
        self,
        svc: Services,
        access: TenantAccess,
        name: str,
        spec_patch: dict[str, Any],
        if_match: str | None,
    ) -> dict[str, Any]:
        """Validate the patched spec here (errors name the field), then write it only if the
        object is still the version validated; if only its status moved meanwhile (the
        operator's writes), read, check and write again."""
        kind = self.model
        expected = custom.expected_etag(if_match)
        for tries in range(1, custom.WRITE_TRIES + 1):
            current = await custom.fetch(svc, access, kind, name)
            custom.check_etag(kind, name, current, expected)
            try:
                self.spec_model.model_validate(merge(current.get("spec") or {}, spec_patch))
            except ValidationError as error:
                first = error.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                param = "spec" + (f".{loc}" if loc else "")
                raise ApiError.invalid(f"{param}: {first['msg']}", param) from error
            version = str((current.get("metadata") or {}).get("resourceVersion", ""))
            try:
                return await custom.merge_patch(
                    svc, access, kind, name, spec_patch, based_on=version
                )
            except ApiException as error:
                if custom.lost_race(error) and tries < custom.WRITE_TRIES:
                    continue
                raise kube_error(error, f"{kind.resource_info.kind} {name!r}") from error
        raise AssertionError("unreachable: the last try returns or raises")

    def _add_routes(self, noun: str, summaries: Summaries, scope: Scope) -> None:
        model, item = self.model, self.path + "/{name}"
        read = tenant_access(scope, Access.READ)
        write = tenant_access(scope, Access.WRITE)
        page_model = cast(Any, Page)[self.out_model]

        async def list_items(
            access: Annotated[TenantAccess, read],
            page: Annotated[PageParams, Depends(page_params)],
            svc: Annotated[Services, Depends(services)],
        ) -> Any:
            items, cont = await custom.list_page(svc, access, model, page)
            return page_model(
                data=[self.out(o) for o in items], has_more=cont is not None, next_cursor=cont
            )

        async def create(
            body: Any,  # the kind's <Kind>Create (`_typed`)
            response: Response,
            access: Annotated[TenantAccess, write],
            svc: Annotated[Services, Depends(services)],
        ) -> Any:
            obj = await custom.create(svc, access, model, body.name, custom.as_written(body.spec))
            return self.answer(response, obj)

        async def show(
            name: ObjectName,
            response: Response,
            access: Annotated[TenantAccess, read],
            svc: Annotated[Services, Depends(services)],
        ) -> Any:
            return self.answer(response, await custom.fetch(svc, access, model, name))

        async def edit(
            name: ObjectName,
            body: Any,  # the kind's <Kind>Edit (`_typed`)
            response: Response,
            access: Annotated[TenantAccess, write],
            svc: Annotated[Services, Depends(services)],
            if_match: IfMatch = None,
        ) -> Any:
            return self.answer(response, await self.change(svc, access, name, body.spec, if_match))

        async def delete(
            name: ObjectName,
            access: Annotated[TenantAccess, write],
            svc: Annotated[Services, Depends(services)],
            if_match: IfMatch = None,
        ) -> Response:
            await custom.delete(svc, access, model, name, if_match)
            return Response(status_code=204)

        one: dict[str, Any] = {"responses": ERRORS, "response_model_exclude_none": True}
        add = self.router.add_api_route
        add(
            self.path,
            list_items,
            methods=["GET"],
            name=f"list_{noun}s",
            response_model=page_model,
            summary=summaries.list,
            **one,
        )
        add(
            self.path,
            _typed(create, body=self.create_model),
            methods=["POST"],
            name=f"create_{noun}",
            status_code=201,
            response_model=self.out_model,
            summary=summaries.create,
            **one,
        )
        add(
            item,
            show,
            methods=["GET"],
            name=f"get_{noun}",
            response_model=self.out_model,
            summary=summaries.show,
            **one,
        )
        if summaries.edit is not None:
            add(
                item,
                _typed(edit, body=self.edit_model),
                methods=["PATCH"],
                name=f"edit_{noun}",
                response_model=self.out_model,
                summary=summaries.edit,
                **one,
            )
        add(
            item,
            delete,
            methods=["DELETE"],
            name=f"delete_{noun}",
            status_code=204,
            responses=ERRORS,
            summary=summaries.delete,
        )
