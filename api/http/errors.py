"""One error shape for every failure: `{"error": {"type", "code", "message", "param"}}`.

`type` is the broad class a client branches on (as in Stripe's API), `code` the precise
reason, `param` the request field at fault (camelCase, dotted: `spec.dkim.selectorPrefix`) or
null. Validation errors of request bodies, query and path parameters, unknown routes and
unexpected failures all come out in this shape; an unexpected failure says nothing of its cause
(the log has it, with the request id the client was given).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "ErrorBody", "ErrorResponse", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    type: str = Field(
        description="invalid_request_error, authentication_error, permission_error, "
        "not_found_error, conflict_error, precondition_failed_error, rate_limit_error or api_error."
    )
    code: str = Field(description="The precise reason, e.g. parameter_invalid, resource_exists.")
    message: str = Field(description="What went wrong and how to fix it.")
    param: str | None = Field(default=None, description="The request field at fault, if any.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    """Raise anywhere in a handler to answer with the error envelope."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(type=type_, code=code, message=message, param=param)
        self.headers = headers or {}

    @classmethod
    def not_found(cls, what: str, param: str | None = None) -> ApiError:
        return cls(404, "not_found_error", "resource_missing", f"No such {what}.", param=param)

    @classmethod
    def invalid(cls, message: str, param: str | None, code: str = "parameter_invalid") -> ApiError:
        return cls(400, "invalid_request_error", code, message, param=param)

    @classmethod
    def unauthenticated(cls, message: str, code: str = "invalid_credentials") -> ApiError:
        return cls(
            401, "authentication_error", code, message, headers={"WWW-Authenticate": "Bearer"}
        )

    @classmethod
    def forbidden(cls, message: str, code: str = "insufficient_permissions") -> ApiError:
        return cls(403, "permission_error", code, message)


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=error.body).model_dump(mode="json"),
        status_code=error.status,
        headers=error.headers,
    )


def _param(loc: Sequence[int | str]) -> str | None:
    """`("body", "spec", "dkim", "selectorPrefix")` -> `spec.dkim.selectorPrefix`; list
    indexes as `[0]`. Models validate by alias, so the names are the wire's (camelCase)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    # pydantic names the failing member of a union or a model validator's context; they are
    # not fields of the request.
    parts = [
        p for p in parts if not (isinstance(p, str) and ("[" in p or p.startswith("function")))
    ]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _validation_error(errors: Sequence[Any]) -> ApiError:
    first = errors[0] if errors else {}
    param = _param(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "missing":
        code, message = "parameter_missing", f"{param or 'a field'} is required."
    elif first.get("type") in ("extra_forbidden",):
        code, message = "parameter_unknown", f"{param} is not a known field: remove it."
    elif first.get("type") == "json_invalid":
        code, message = "body_invalid", "The request body is not valid JSON."
    else:
        code = "parameter_invalid"
        message = f"{param}: {message}" if param else message
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more error(s) in this request.)"
    return ApiError.invalid(message, param, code)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        return error_response(error)

    async def on_validation(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return error_response(_validation_error(error.errors()))

    async def on_http(_request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 404:
            api_error = ApiError(404, "not_found_error", "route_missing", "No such route.")
        elif error.status_code == 405:
            api_error = ApiError(
                405, "invalid_request_error", "method_not_allowed", "Method not allowed here."
            )
        else:
            api_error = ApiError(
                error.status_code, "invalid_request_error", "http_error", str(error.detail)
            )
        api_error.headers.update(error.headers or {})
        return error_response(api_error)

    async def on_unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception(
            "unexpected failure answering %s %s (request %s)",
            request.method,
            request.url.path,
            getattr(request.state, "request_id", "-"),
        )
        return error_response(
            ApiError(500, "api_error", "internal_error", "Something went wrong on our side.")
        )

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
