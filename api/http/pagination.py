"""Cursor pagination: `?limit=&cursor=` in, `{"data", "hasMore", "nextCursor"}` out.

A cursor is opaque to clients; pass back `nextCursor` unchanged to get the next page. For
custom resources it is the API server's own `continue` token, which is bound to the list it
came from (namespace and kind) and is refused when replayed against another.
"""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Page", "PageParams", "page_params"]

T = TypeVar("T")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class Page(BaseModel, Generic[T]):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    data: list[T] = Field(description="This page's items.")
    has_more: bool = Field(description="Whether another page follows.")
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` to get the next page; null on the last."
    )


class PageParams(BaseModel):
    limit: int
    cursor: str | None


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Items per page (1-100).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(max_length=2048, description="`nextCursor` of the previous page."),
    ] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor or None)
